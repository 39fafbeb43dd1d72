import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import GRDB
import Testing

/// Outages far longer than the broker's acknowledgement timeout (`consumer_timeout`), on both
/// stores: the worker hands back what it holds before the broker's timeout meets it, stops
/// consuming, and consumes again within seconds of the database's return. Nothing is
/// dead-lettered, every command is answered once, one customer each.
///
/// Why a broker of its own: `consumer_timeout` is global to a RabbitMQ node (3.10 has no
/// per-queue or per-consumer value), and the tests of this process run in parallel; lowered to a
/// few seconds on the shared broker, it would close the channels of other tests that hold
/// deliveries longer (paused workers, lock tests). This suite starts a node on
/// `BROKER_OUTAGE_PORT` (default: the tests' broker port + 4: a node also listens for TLS on its
/// port + 2, and the port + 1 belongs to the broker-restart suite, which stops its node), lowers
/// the timeout there, restores it on every path, and runs its tests one after the other. The PostgreSQL variant crash-stops a server of its
/// own too (`PG_OUTAGE_PORT`, default: the tests' server port + 3), for the same reason.
@Suite("Worker: outages longer than the broker's acknowledgement timeout", .closesResources, .serialized,
       .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct OutageTests {
    /// The broker's acknowledgement timeout in these tests, and how often it checks it.
    static let consumerTimeout: Duration = .seconds(5)
    static let channelTick: Duration = .seconds(1)
    /// The worker's `HAND_BACK_AFTER`: below the timeout, with room for the broker's tick.
    static let handBackAfter = 2
    /// Ten times the acknowledgement timeout.
    static let outage: Duration = consumerTimeout * 10

    static var brokerPort: Int {
        TestBroker.environment["BROKER_OUTAGE_PORT"].flatMap(Int.init) ?? TestBroker.port + 4
    }

    @Test(arguments: StoreKind.all)
    func anOutageOfTenTimesTheAcknowledgementTimeoutLosesNothing(_ kind: StoreKind) async throws {
        let broker = try await Self.startBroker()
        let outage: DatabaseOutage = switch kind {
        case .sqlite: try await .fullDisk()
        case .postgres: try await .crashedServer()
        }
        var tuning = WorkerFixture.Tuning(amqpURL: broker)
        tuning.databaseURL = outage.databaseURL
        let fixture = try await WorkerFixture("outage-\(kind)", tuning: tuning, store: kind)
        let nodes = try fixture.configuration.amqpNodes
        TestResources.onExit("topology of the outage test") { await fixture.deleteTopology(on: nodes) }
        let merchant = try await fixture.merchant()
        let names = fixture.configuration.names
        let worker = try ObservedWorker(fixture, name: "worker", environment: [
            "HAND_BACK_AFTER": String(Self.handBackAfter), "LOG_LEVEL": "info",
        ])
        TestResources.onExit("outage worker") { await worker.process.terminate() }
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(30)))

        // 500 commands answered, then the outage while 500 more arrive, and 200 more during it.
        let before = try await fixture.publish(prefix: "before", count: 500, apiKey: merchant.secretKey)
        #expect(try await fixture.waitForCustomers(500, timeout: .seconds(60)))
        try await outage.begin()
        let outageBegan = ContinuousClock.now
        let during = try await fixture.publish(prefix: "during", count: 500, apiKey: merchant.secretKey)
        #expect(try await worker.poll("/readyz", until: 503, timeout: .seconds(30)), "not ready while the database is away")
        // The worker held commands and handed them back before the broker's timeout met them.
        let handedBack = try await worker.pollMetric("customer_worker_handed_back_total", atLeast: 1, timeout: .seconds(30))
        let arriving = try await fixture.publish(prefix: "arriving", count: 200, apiKey: merchant.secretKey)
        try await Task.sleep(until: outageBegan + Self.outage)  // the outage's length, not a wait for an event
        #expect(await worker.status("/readyz") == 503, "still paused at the end of the outage")
        #expect(await worker.status("/healthz") == 200, "a pause is not a hang")
        let held = await worker.metric("customer_worker_handed_back_total") ?? 0

        try await outage.end()
        let back = ContinuousClock.now
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(30)))
        let serving = ContinuousClock.now - back
        #expect(serving < .seconds(5), "serving again within 5 s of the database's return: \(serving)")

        let all = before + during + arriving
        let replies = try await fixture.collect(names.repliesQueue, until: Set(all.map(\.messageID)), timeout: .seconds(120))
        let answered = replies.compactMap(\.properties.correlationID)
        #expect(Set(answered) == Set(all.map(\.messageID)), "every command answered: \(Set(answered).count) of \(all.count)")
        #expect(answered.count == all.count, "each once: \(answered.count) replies")
        #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
        #expect(try await fixture.collect(names.deadLetterQueue, until: [], timeout: .seconds(1)).isEmpty, "nothing dead-lettered")
        #expect(try await fixture.store.customerCount() == all.count, "one customer each")
        #expect(await worker.metric("customer_worker_paused") == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("commands handed back to the queue"))
        #expect(!log.contains("unclassified database error"), "an outage is recognised as one")
        #expect(!log.contains("returned to the queue"), "nothing requeued: no delivery spent")
        print("""
            outage (\(kind)): consumer_timeout \(Self.consumerTimeout), channel_tick_interval \(Self.channelTick), \
            HAND_BACK_AFTER \(Self.handBackAfter) s, outage \(Self.outage); held and handed back \(Int(held)) \
            (first hand-back seen: \(Int(handedBack))); \(answered.count) replies for \(all.count) commands; \
            serving again \(serving) after the database's return
            """)
        #expect(try await worker.stop() == 0)
    }

    // MARK: Servers of its own

    /// Starts this suite's broker, lowers its acknowledgement timeout and its check interval
    /// (restored when the test ends, on every path), checks that the broker enforces it, and
    /// returns its URL.
    static func startBroker() async throws -> String {
        let port = brokerPort
        try await TestBroker.brokerScript(["start"], port: port)
        TestResources.onExit("consumer_timeout of the broker on port \(port)") {
            _ = try? await setEnvironment(port, consumerTimeout: .seconds(1800), channelTick: .seconds(60))
        }
        try await setEnvironment(port, consumerTimeout: consumerTimeout, channelTick: channelTick)
        var configuration = try TestBroker.configuration(name: "outage-timeout-check")
        configuration.port = port
        try await expectTimeoutEnforced(configuration)
        var components = try #require(URLComponents(string: TestBroker.url))
        components.port = port
        return try #require(components.string)
    }

    private static func setEnvironment(_ port: Int, consumerTimeout: Duration, channelTick: Duration) async throws {
        let milliseconds = { (duration: Duration) in duration.components.seconds * 1000 }
        for (key, value) in [("consumer_timeout", milliseconds(consumerTimeout)), ("channel_tick_interval", milliseconds(channelTick))] {
            try await TestBroker.brokerScript(["ctl", "-q", "eval", "application:set_env(rabbit, \(key), \(value))."], port: port)
        }
    }

    /// A consumer holding a delivery unacknowledged loses its channel (3.10: 406
    /// PRECONDITION_FAILED) or its consumer (4.x: basic.cancel) within the lowered timeout and a
    /// tick: the figures the test relies on are in force on channels opened from now on.
    private static func expectTimeoutEnforced(_ configuration: ConnectionConfiguration) async throws {
        let session = AMQPSession(configuration: configuration, recovery: TestBroker.quickRecovery, logger: TestBroker.logger("timeout-check"))
        TestResources.onExit("AMQP session timeout-check") { await session.close() }
        let queue = TestBroker.uniqueName("timeout-check")
        try await session.declare(Topology(queues: [.init(name: queue, arguments: ["x-queue-type": "quorum"])]))
        try await session.enableConfirms()
        #expect(try await session.publish([OutgoingMessage(exchange: "", routingKey: queue, body: Array("held".utf8))]) == [.confirmed])
        try await session.consume(queue: queue)
        let held = try await session.nextDeliveries(maximum: 1, wait: .seconds(5))
        #expect(held.count == 1)
        let generation = await session.generation
        let deadline = ContinuousClock.now + consumerTimeout + channelTick + .seconds(5)
        while await session.generation == generation {
            try #require(ContinuousClock.now < deadline, "the broker did not enforce consumer_timeout \(consumerTimeout)")
            try await Task.sleep(for: .milliseconds(100))
        }
        try? await session.deleteQueue(queue)
        await session.close()
    }
}

/// How a test takes the database away and gives it back.
struct DatabaseOutage: Sendable {
    let databaseURL: String
    let begin: @Sendable () async throws -> Void
    let end: @Sendable () async throws -> Void

    /// SQLite on a tmpfs of its own, filled up by a file (the field notes' recipe): every write
    /// that needs a new page fails with SQLITE_FULL until the file is deleted.
    static func fullDisk() async throws -> DatabaseOutage {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestBroker.uniqueName("outage-tmpfs"))
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try await TestBroker.run("/bin/mount", ["-t", "tmpfs", "-o", "size=64m", "tmpfs", directory.path])
        TestResources.onExit("tmpfs at \(directory.path)") {
            _ = try? await TestBroker.run("/bin/umount", ["-l", directory.path])
            try? FileManager.default.removeItem(at: directory)
        }
        let filler = directory.appendingPathComponent("filler").path
        let database = directory.appendingPathComponent("customers.sqlite").path
        return DatabaseOutage(databaseURL: database, begin: {
            // SQLite writes into a write-ahead log's space again after a checkpoint: a full disk
            // stops its transactions only once the log must grow. So the log is truncated first
            // (the worker is idle then: every command so far is stored), and the next transaction
            // must grow it. Without this, the worker once stored 700 commands into the old log's
            // space and never saw the outage (a CI run on 2026-12-07).
            try await truncateLog(of: database)
            // dd ends with "No space left on device" (status 1), the filesystem full.
            _ = try await TestBroker.runCapturing("/bin/dd", ["if=/dev/zero", "of=\(filler)", "bs=64k"])
        }, end: {
            try FileManager.default.removeItem(atPath: filler)
        })
    }

    /// `PRAGMA wal_checkpoint(TRUNCATE)` on a connection of the test's own, until the log is
    /// empty (the worker's background checkpointer may hold it busy a moment).
    private static func truncateLog(of database: String) async throws {
        let queue = try DatabaseQueue(path: database)
        defer { try? queue.close() }
        let log = database + "-wal"
        var size = 0
        let truncated = try await waitFor(timeout: .seconds(30)) {
            _ = try? await queue.writeWithoutTransaction { try $0.checkpoint(.truncate) }
            size = (try? FileManager.default.attributesOfItem(atPath: log)[.size] as? Int) ?? 0
            return size == 0
        }
        try #require(truncated, "the write-ahead log \(log) is still \(size) bytes")
    }

    /// A PostgreSQL server of the test's own (`scripts/postgres.sh`), crash-stopped
    /// (`scripts/postgres.sh crash`: no shutdown checkpoint, clients see their connections drop) and
    /// started again; stopped and deleted when the test ends.
    static func crashedServer() async throws -> DatabaseOutage {
        let shared = try #require(TestPostgres.url.flatMap { URLComponents(string: $0) }?.port, "POSTGRES_TEST_URL is not set")
        let port = TestBroker.environment["PG_OUTAGE_PORT"].flatMap(Int.init) ?? shared + 3
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("customer-worker-postgres-outage-\(port)").path
        let script = TestBroker.repositoryRoot.appendingPathComponent("scripts/postgres.sh").path
        let environment = ["PG_PORT": String(port), "PG_DIR": directory]
        try await TestBroker.run(script, ["start"], environment: environment)
        TestResources.onExit("PostgreSQL on port \(port)") { _ = try? await TestBroker.run(script, ["stop"], environment: environment) }
        // connect_timeout below the broker's timeout, as docs/operations.md asks of operators: a
        // transaction waiting the default 10 s for a server that refuses cannot be handed back
        // before a 5 s acknowledgement timeout meets it (seen on RabbitMQ 4.3 under load: the
        // consumer cancelled mid-outage, and 256 commands answered twice).
        let base = try await TestBroker.run(script, ["url"], environment: environment).trimmingCharacters(in: .whitespacesAndNewlines)
        let url = base + (base.contains("?") ? "&" : "?") + "connect_timeout=1"
        return DatabaseOutage(databaseURL: url, begin: {
            // The script's crash: `pg_ctl -m immediate` of whichever version runs (POSTGRES).
            try await TestBroker.run(script, ["crash"], environment: environment)
        }, end: {
            try await TestBroker.run(script, ["start"], environment: environment)
        })
    }
}

extension WorkerFixture {
    /// Waits until the store holds `count` customers; false after `timeout`.
    func waitForCustomers(_ count: Int, timeout: Duration) async throws -> Bool {
        try await waitFor(timeout: timeout, every: .milliseconds(100)) { try await store.customerCount() >= count }
    }
}

extension ObservedWorker {
    /// Polls a metric until it reaches `minimum`; returns its value, throws after `timeout`.
    func pollMetric(_ sample: String, atLeast minimum: Double, timeout: Duration) async throws -> Double {
        var value: Double?
        let reached = try await waitFor(timeout: timeout, every: .milliseconds(100)) {
            value = await metric(sample)
            return (value ?? -.infinity) >= minimum
        }
        try #require(reached, "\(sample) did not reach \(minimum): \(value.map { "\($0)" } ?? "absent")")
        return value ?? minimum
    }
}
