import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// Another process holding the database's write lock: the worker must neither reply to nor
/// acknowledge what it could not commit, must retry with backoff, and must never spend a
/// command's deliveries (requeue, dead-letter) because the database was unavailable.
@Suite("Worker: transient failures", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct TransientFailureTests {
    /// Unacknowledged deliveries of `queue`, as the broker reports them.
    /// Unacknowledged messages of `queues` (the worker's command queues) together.
    private func unacknowledged(_ queues: [String]) async throws -> Int {
        let listing = try await TestBroker.brokerScript(["ctl", "-q", "list_queues", "--no-table-headers", "name", "messages_unacknowledged"])
        var count = 0
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t").map { $0.trimmingCharacters(in: .whitespaces) }
            if fields.count == 2, queues.contains(fields[0]) { count += Int(fields[1]) ?? 0 }
        }
        return count
    }

    @Test func aBusyDatabaseDelaysTheReplyButLosesNothing() async throws {
        var tuning = WorkerFixture.Tuning()
        tuning.busyTimeout = .milliseconds(100)
        tuning.transientAttempts = 20
        tuning.transientBackoff = RecoveryPolicy(initialDelay: .milliseconds(100), maximumDelay: .milliseconds(300))
        let fixture = try await WorkerFixture("busy", tuning: tuning)
        let merchant = try await fixture.merchant()
        let reply = try await fixture.withWorker {
            let release = try await holdSQLiteWriteLock(on: fixture.configuration.databaseURL)
            let command = CommandClient.Command(body: Array(#"{"externalId":"busy-1"}"#.utf8), messageID: "busy-1")
            try await fixture.client.publish([command], apiKey: merchant.secretKey, wantReplies: true)
            // The worker holds the command (delivered, not acknowledged) while the database is locked.
            let deadline = ContinuousClock.now + .seconds(30)
            while try await unacknowledged(fixture.configuration.commandQueues) == 0 {
                try #require(ContinuousClock.now < deadline, "the worker never took the command")
                try await Task.sleep(for: .milliseconds(50))
            }
            #expect(try await fixture.client.replies(count: 1, timeout: .milliseconds(500)).isEmpty,
                    "a reply came while the database was locked")
            release()
            let replies = try await fixture.client.replies(count: 1, timeout: .seconds(30))
            Conformance.record(replies)
            return try #require(replies.first, "no reply after the lock was released")
        }
        #expect(reply.properties.type == "CustomerCreated")
        #expect(try await fixture.store.customerCount() == 1)
        await fixture.tearDown()
    }

    /// The database unwritable for seconds (another process holds the write lock far past the
    /// busy timeout) while commands wait, with one publishing attempt and a delivery limit of 2:
    /// the worker pauses (not ready, metrics say so), dead-letters nothing and requeues nothing,
    /// and answers every command once the lock is gone.
    /// On SQLite another process holds the write lock; on PostgreSQL the database refuses
    /// connections and its open ones are closed (the server answers, the database does not).
    @Test(arguments: StoreKind.all)
    func anOutagePausesTheWorkerAndBurnsNoDeliveries(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("outage", tuning: .init(deliveryLimit: 2), store: kind)
        let merchant = try await fixture.merchant()
        let databaseURL = fixture.configuration.databaseURL
        var environment = ["DATABASE_BUSY_TIMEOUT_MS": "100", "TRANSIENT_ATTEMPTS": "1", "LOG_LEVEL": "info"]
        if kind == .postgres {
            // Waiting for a connection that cannot come is bounded by connect_timeout.
            environment["DATABASE_URL"] = databaseURL + (databaseURL.contains("?") ? "&" : "?") + "connect_timeout=2"
        }
        let worker = try ObservedWorker(fixture, name: "worker", environment: environment)
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(60)))

        // The outage lasts until the test has seen the worker paused, however long that takes.
        let endOutage: @Sendable () async throws -> Void
        switch kind {
        case .sqlite:
            let release = try await holdSQLiteWriteLock(on: databaseURL)
            endOutage = { release() }
        case .postgres:
            try await TestPostgres.setAcceptingConnections(databaseURL, false)
            endOutage = { try await TestPostgres.setAcceptingConnections(databaseURL, true) }
        }
        let commands = (0..<30).map { CommandClient.Command(body: Array(#"{"externalId":"outage-\#($0)"}"#.utf8), messageID: "outage-\($0)") }
        try await fixture.client.publish(commands, apiKey: merchant.secretKey, wantReplies: true)
        #expect(try await worker.poll("/readyz", until: 503, timeout: .seconds(30)), "ready while the database fails")
        #expect(await worker.metric("customer_worker_paused") == 1)
        #expect(await worker.body("/readyz")?.hasSuffix("paused: the database keeps failing") == true)
        #expect(await worker.status("/healthz") == 200, "a pause is not a hang")

        // Paused for a while: several retries, none of them spending a delivery.
        let retried = ContinuousClock.now + .seconds(30)
        while (await worker.metric("customer_worker_store_failures_total") ?? 0) < 3 {
            try #require(ContinuousClock.now < retried, "the worker did not retry the database")
            try await Task.sleep(for: .milliseconds(100))
        }
        try await endOutage()
        let replies = try await fixture.collectReplies(for: Set(commands.map(\.messageID)), timeout: .seconds(30))
        #expect(Set(replies.compactMap(\.properties.correlationID)) == Set(commands.map(\.messageID)))
        #expect(replies.count == 30, "answered once each")
        #expect(replies.allSatisfy { $0.properties.headers["x-replayed"] == .bool(false) }, "nothing was requeued and handled twice")
        #expect(try await fixture.drain(fixture.configuration.names.deadLetterQueue, idle: .milliseconds(300)).isEmpty)
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(5)))
        #expect(await worker.metric("customer_worker_paused") == 0)
        #expect((await worker.metric("customer_worker_store_failures_total") ?? 0) > 0)
        #expect(try await fixture.store.customerCount() == 30)
        #expect(try await worker.stop() == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("database unavailable: paused"))
        #expect(log.contains("database available again; resuming"))
        #expect(!log.contains("returned to the queue"))
        await fixture.tearDown()
    }
}
