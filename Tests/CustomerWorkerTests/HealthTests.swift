import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import GRDB
import Testing

/// Probes that tell the truth: readiness false while the worker cannot take commands, a
/// liveness window derived from the settings, and a health command that changes nothing.
@Suite("Health", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct HealthTests {
    @discardableResult
    private func ctl(_ arguments: String...) async throws -> String {
        try await TestBroker.brokerScript(["ctl", "-q"] + arguments)
    }

    /// Closes, on the broker side, every connection of `user`.
    private func closeConnections(of user: String) async throws -> Int {
        let listing = try await ctl("list_connections", "--no-table-headers", "pid", "user")
        var closed = 0
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t")
            guard fields.count == 2, fields[1] == user else { continue }
            try await ctl("close_connection", String(fields[0]), "closed by a test")
            closed += 1
        }
        return closed
    }

    /// A broker user of its own lets the test cut the worker off (no permissions, connections
    /// closed) without touching any other test's connections.
    @Test func readinessIsFalseWhileTheWorkerReconnects() async throws {
        let fixture = try await WorkerFixture("ready")
        let merchant = try await fixture.merchant()
        let user = TestBroker.uniqueName("ready-user")
        try await ctl("add_user", user, "ready-password")
        try await ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        TestResources.onExit("broker user \(user)") { _ = try? await TestBroker.brokerScript(["ctl", "-q", "delete_user", user]) }

        let configuration = try ConnectionConfiguration(url: TestBroker.url)
        let worker = try ObservedWorker(fixture, name: "worker", environment: [
            "AMQP_URL": "amqp://\(user):ready-password@\(configuration.host):\(configuration.port)/%2f",
        ])
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(60)), "never ready")
        let node = "\(configuration.host):\(configuration.port)"
        #expect(await worker.body("/readyz") == "ready\nconsumer node: \(node), publisher node: \(node)", "readiness names the node in use")

        try await ctl("clear_permissions", "-p", "/", user)
        #expect(try await closeConnections(of: user) == 2, "the consumer's and the publisher's connections")
        #expect(try await worker.poll("/readyz", until: 503, timeout: .seconds(10)), "still ready while reconnecting")
        #expect(await worker.status("/healthz") == 200, "waiting for the broker is not a reason to restart")

        try await ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(40)), "not ready again after the broker let it back in")
        let reply = try await fixture.send(json: #"{"externalId":"after-reconnect"}"#, apiKey: merchant.secretKey)
        #expect(reply.properties.type == "CustomerCreated")

        #expect(try await worker.stop() == 0)
        await fixture.tearDown()
    }

    @Test func theHealthCommandDoesNotMigrate() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestBroker.uniqueName("health-no-migrate"))
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("customers.sqlite").path
        let result = try await TestBroker.runCapturing(WorkerProcess.executable, ["health"],
                                                       environment: ["AMQP_URL": TestBroker.url, "DATABASE_PATH": path])
        #expect(result.status == 1, "an unmigrated database is not healthy")
        let tables = try await DatabaseQueue(path: path).read { try String.fetchAll($0, sql: "SELECT name FROM sqlite_master") }
        #expect(tables.isEmpty, "health created \(tables)")
    }
}
