import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// The events exchange deleted under a running worker: the publisher declares it again and the
/// command is answered; if it cannot be declared again, the worker exits non-zero within
/// PUBLISH_FAILURE_TIMEOUT. Never a silent hang holding the command.
@Suite("Worker: events exchange deleted", .closesResources, .serialized, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct ExchangeDeletedTests {
    private func exchanges() async throws -> Set<String> {
        let listing = try await TestBroker.brokerScript(["ctl", "-q", "list_exchanges", "--no-table-headers", "name"])
        return Set(listing.split(separator: "\n").map { $0.trimmingCharacters(in: .whitespaces) })
    }

    @Test func theExchangeIsDeclaredAgainAndTheCommandAnswered() async throws {
        let fixture = try await WorkerFixture("exchange-deleted")
        let merchant = try await fixture.merchant()
        let logPath = fixture.directory.appendingPathComponent("worker.log").path
        let worker = try WorkerProcess(environment: fixture.environment, logFile: logPath)
        let events = fixture.configuration.names.eventsExchange
        #expect(try await fixture.send(json: #"{"externalId":"x-1"}"#, apiKey: merchant.secretKey).properties.type == "CustomerCreated")

        let admin = try await TestBroker.session(TestBroker.uniqueName("admin"))
        try await admin.deleteExchange(events)
        #expect(!(try await exchanges().contains(events)))
        await admin.close()

        let reply = try await fixture.send(json: #"{"externalId":"x-2"}"#, apiKey: merchant.secretKey)
        #expect(reply.properties.type == "CustomerCreated")
        #expect(try await exchanges().contains(events), "the publisher did not declare the exchange again")
        #expect(try await fixture.store.customerCount() == 2)
        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        await fixture.tearDown()
    }

    /// The worker's user may not declare the events exchange any more (its configure permission
    /// now excludes that one name), and the exchange is gone: publishing cannot succeed.
    @Test func theWorkerExitsNonZeroWhenItCannotPublishForTheConfiguredTime() async throws {
        let fixture = try await WorkerFixture("exchange-gone")
        let merchant = try await fixture.merchant()
        var environment = fixture.environment
        environment["PUBLISH_FAILURE_TIMEOUT"] = "5"
        environment["CONFIRM_TIMEOUT"] = "2"
        let logPath = fixture.directory.appendingPathComponent("worker.log").path
        let worker = try WorkerProcess(environment: environment, logFile: logPath)
        let events = fixture.configuration.names.eventsExchange
        #expect(try await fixture.send(json: #"{"externalId":"g-1"}"#, apiKey: merchant.secretKey).properties.type == "CustomerCreated")

        let admin = try await TestBroker.session(TestBroker.uniqueName("admin"))
        try await admin.deleteExchange(events)
        await admin.close()
        // Nothing publishes until the next command, so the worker has not declared it again yet.
        let escaped = events.replacingOccurrences(of: ".", with: "\\.")
        try await TestBroker.brokerScript(["ctl", "set_permissions", "-p", "/", "guest", "^(?!\(escaped)$).*", ".*", ".*"])
        TestResources.onExit("guest's permissions") {
            _ = try? await TestBroker.brokerScript(["ctl", "set_permissions", "-p", "/", "guest", ".*", ".*", ".*"])
        }

        let command = CommandClient.Command(body: Array(#"{"externalId":"g-2"}"#.utf8), messageID: "g-2")
        try await fixture.client.publish([command], apiKey: merchant.secretKey, wantReplies: true)
        let clock = ContinuousClock()
        let started = clock.now
        let status = try await worker.waitForExit(timeout: .seconds(60))
        #expect(status != nil && status != 0, "the worker kept running (or exited 0) although it could not publish")
        print("exchange gone: worker exited with \(status.map(String.init) ?? "nothing") after \(clock.now - started)")
        #expect(BrokerConnections.log(logPath).contains("PUBLISH_FAILURE_TIMEOUT"))
        #expect(try await fixture.store.customerCount() <= 2)
        await fixture.tearDown()
    }
}
