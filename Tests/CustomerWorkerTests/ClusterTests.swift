import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// A worker on the three-node cluster of `scripts/broker.sh cluster start` (AMQP_CLUSTER_URL):
/// the node it uses is stopped in the middle of a stream, and it carries on through another.
@Suite("Worker on a cluster", .closesResources, .enabled(if: TestBroker.clusterEnabled, "no cluster: run scripts/broker.sh cluster start, export AMQP_CLUSTER_URL"),
       .serialized)
struct ClusterTests {
    private let total = 3000

    @discardableResult
    private func ctl(_ arguments: [String], port: Int) async throws -> String {
        try await TestBroker.brokerScript(["ctl", "-q"] + arguments, port: port)
    }

    /// The port of the node the worker logged it consumes from.
    private func workerNode(_ logPath: String, nodes: [ConnectionConfiguration]) async throws -> Int {
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let log = BrokerConnections.log(logPath)
            if let line = log.split(separator: "\n").first(where: { $0.contains("worker consuming") }),
               let node = nodes.first(where: { line.contains("amqp.node=\($0.endpoint)") }) {
                return node.port
            }
            try await Task.sleep(for: .milliseconds(100))
        }
        throw TestBroker.ScriptError(command: "waiting for the worker to log its node", status: -1)
    }

    /// Messages in `queue`, as the node on `port` reports them.
    private func depth(_ queue: String, port: Int) async throws -> Int? {
        let listing = try await ctl(["list_queues", "--no-table-headers", "name", "messages"], port: port)
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t").map { $0.trimmingCharacters(in: .whitespaces) }
            if fields.count == 2, fields[0] == queue { return Int(fields[1]) }
        }
        return nil
    }

    @Test func theWorkerMovesToAnotherNodeWhenItsNodeStops() async throws {
        let clusterURL = try #require(TestBroker.clusterURL, "AMQP_CLUSTER_URL is not set (scripts/test.sh starts the cluster)")
        let nodes = try ConnectionConfiguration.list(clusterURL)
        try #require(nodes.count == 3)
        let fixture = try await WorkerFixture("cluster", tuning: .init(prefetch: 64))
        let merchant = try await fixture.merchant()
        var environment = fixture.environment
        environment["AMQP_URL"] = clusterURL
        environment["LOG_LEVEL"] = "info"
        let logPath = fixture.directory.appendingPathComponent("worker.log").path
        let worker = try WorkerProcess(environment: environment, logFile: logPath)

        let stopped = try await workerNode(logPath, nodes: nodes)
        let survivor = try #require(nodes.first { $0.port != stopped })
        var clientConfiguration = fixture.configuration
        clientConfiguration.amqpURL = "amqp://\(survivor.user):\(survivor.password)@\(survivor.host):\(survivor.port)/%2f"
        let client = try await CommandClient(configuration: clientConfiguration, logger: TestBroker.logger("cluster client"),
                                             name: TestBroker.uniqueName("cluster.client"))
        TestResources.onExit("cluster client") { await client.close() }
        let names = fixture.configuration.names
        let members = try await ctl(["list_queues", "--no-table-headers", "name", "type", "members"], port: survivor.port)
        let queueLine = try #require(members.split(separator: "\n").first { $0.hasPrefix(names.commandQueue + "\t") })
        #expect(queueLine.contains("quorum"))
        for node in nodes { #expect(queueLine.contains("customer-worker-\(node.port)@"), "no replica on \(node.endpoint)") }

        let commands = (0..<total).map {
            CommandClient.Command(body: Array(#"{"externalId":"c-\#($0)","name":"Customer \#($0)"}"#.utf8), messageID: "c-\($0)")
        }
        try await client.publish(commands, apiKey: merchant.secretKey, wantReplies: true)
        var replies: [Delivery] = []
        while replies.count < 300 {
            let more = try await client.replies(count: 300 - replies.count, timeout: .seconds(30))
            try #require(!more.isEmpty, "the worker answered nothing")
            replies += more
        }
        // The node the worker uses goes down mid-stream (its Erlang VM stays up, its AMQP listener does not).
        try await ctl(["stop_app"], port: stopped)
        TestResources.onExit("the app of cluster node \(stopped)") { _ = try? await TestBroker.brokerScript(["ctl", "start_app"], port: stopped) }
        let expected = Set(commands.map(\.messageID))
        var answered = Set(replies.compactMap(\.properties.correlationID))
        #expect(answered.count < total, "the worker finished before its node stopped")
        let deadline = ContinuousClock.now + .seconds(120)
        while !expected.isSubset(of: answered), ContinuousClock.now < deadline {
            let batch = try await client.replies(count: total, timeout: .milliseconds(500))
            replies += batch
            batch.forEach { answered.insert($0.properties.correlationID ?? "") }
        }
        print("cluster: node \(stopped) stopped after \(min(300, replies.count)) replies; \(replies.count) replies for \(total) commands")
        #expect(answered.count == total && expected.isSubset(of: answered), "\(expected.subtracting(answered).count) commands unanswered")
        #expect(try await fixture.store.customerCount() == total)
        #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
        #expect(try await depth(names.deadLetterQueue, port: survivor.port) == 0, "something was dead-lettered")
        // The log line follows the worker's next turn after its reconnect: waited for, not read once.
        let moved = try await waitFor(timeout: .seconds(30)) { BrokerConnections.log(logPath).contains("moved to another broker node") }
        #expect(moved, "the log does not say the worker moved")
        let log = BrokerConnections.log(logPath)
        #expect(!log.contains(":\(survivor.password)@"), "a password in the log")

        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        if let keep = TestBroker.environment["CLUSTER_TEST_LOG"] { try? log.write(toFile: keep, atomically: true, encoding: .utf8) }
        await client.close()
        let admin = AMQPSession(nodes: [survivor], logger: TestBroker.logger("cluster admin"))
        await fixture.configuration.deleteTopology(admin)
        await admin.close()
        await fixture.tearDown()
    }
}
