import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// Heartbeats are the connections' own business: a worker nobody talks to keeps both of them.
@Suite("Worker: heartbeats", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct HeartbeatTests {
    @Test func anIdleWorkerWithTwoSecondHeartbeatsKeepsBothConnections() async throws {
        let fixture = try await WorkerFixture("heartbeat")
        let merchant = try await fixture.merchant()
        var environment = fixture.environment
        environment["AMQP_URL"] = TestBroker.url + (TestBroker.url.contains("?") ? "&" : "?") + "heartbeat=2"
        environment["LOG_LEVEL"] = "info"
        let logPath = fixture.directory.appendingPathComponent("worker.log").path
        let worker = try WorkerProcess(environment: environment, logFile: logPath)

        let first = try await fixture.send(json: #"{"externalId":"hb-1","name":"Before"}"#, apiKey: merchant.secretKey)
        #expect(first.properties.type == "CustomerCreated")
        let before = try await BrokerConnections.of(workerPID: worker.pid)
        #expect(before.count == 2, "the consumer and the publisher connection")

        try await Task.sleep(for: .seconds(10))  // idle: five heartbeat intervals

        let second = try await fixture.send(json: #"{"externalId":"hb-2","name":"After"}"#, apiKey: merchant.secretKey)
        #expect(second.properties.type == "CustomerCreated")
        #expect(try await BrokerConnections.of(workerPID: worker.pid) == before, "a connection was replaced")
        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        let log = BrokerConnections.log(logPath)
        #expect(!BrokerConnections.mentionsReconnecting(log), "\(log)")
        await fixture.tearDown()
    }
}
