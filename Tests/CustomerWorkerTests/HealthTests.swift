import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import GRDB
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// Probes that tell the truth: readiness false while the worker cannot take commands, a
/// liveness window derived from the settings, and a health command that changes nothing.
@Suite("Health", .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct HealthTests {
    private func get(_ port: Int, _ path: String) async -> Int? {
        guard let (_, response) = try? await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!) else { return nil }
        return (response as? HTTPURLResponse)?.statusCode
    }

    /// Polls `path` until it answers `status`; false after `timeout`.
    private func poll(_ port: Int, _ path: String, _ status: Int, timeout: Duration) async throws -> Bool {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if await get(port, path) == status { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

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
        defer { TestBroker.brokerScriptBlocking(["ctl", "-q", "delete_user", user]) }

        let port = FreePort.next()
        var environment = fixture.environment
        environment["HTTP_PORT"] = String(port)
        let configuration = try ConnectionConfiguration(url: TestBroker.url)
        environment["AMQP_URL"] = "amqp://\(user):ready-password@\(configuration.host):\(configuration.port)/%2f"
        let worker = try WorkerProcess(environment: environment, logFile: fixture.directory.appendingPathComponent("worker.log").path)
        defer { Task { await worker.terminate() } }
        #expect(try await poll(port, "/readyz", 200, timeout: .seconds(20)), "never ready")

        try await ctl("clear_permissions", "-p", "/", user)
        #expect(try await closeConnections(of: user) == 2, "the consumer's and the publisher's connections")
        #expect(try await poll(port, "/readyz", 503, timeout: .seconds(10)), "still ready while reconnecting")
        #expect(await get(port, "/healthz") == 200, "waiting for the broker is not a reason to restart")

        try await ctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        #expect(try await poll(port, "/readyz", 200, timeout: .seconds(40)), "not ready again after the broker let it back in")
        let reply = try await fixture.send(json: #"{"externalId":"after-reconnect"}"#, apiKey: merchant.secretKey)
        #expect(reply.properties.type == "CustomerCreated")

        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
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

/// A TCP port nothing listens on right now.
enum FreePort {
    static func next() -> Int {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
                bind(descriptor, pointer, length) == 0 ? getsockname(descriptor, pointer, &length) : -1
            }
        }
        return Int(UInt16(bigEndian: address.sin_port))
    }
}
