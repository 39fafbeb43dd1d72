import AMQP
import BrokerTestSupport
import CreateCustomer
import CustomerWorker
import Foundation
import GRDB
import Synchronization
import Testing

/// A redelivered command commits its marker, then its work transaction fails (the database
/// refuses it), and SIGTERM comes while the worker waits for the database; twice, with two
/// workers. The markers a graceful stop leaves must never add up to a dead-letter: the worker
/// that stops holding a command whose marker is committed hands it back (its copy is a first
/// delivery, which commits no marker) instead of requeueing it. Once the database is back, the
/// command is answered, once, and nothing is dead-lettered. On both stores (the markers live in
/// the database).
@Suite("Worker: markers left by stops during an outage", .closesResources, .serialized,
       .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct MarkerShutdownTests {
    @Test(arguments: StoreKind.all)
    func aCommandWhoseWorkFailsAfterItsMarkerIsAnsweredAfterTwoStops(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("marker-sigterm-\(kind)", store: kind)
        let merchant = try await fixture.merchant()
        let commands = try await fixture.publish(prefix: "marker-sigterm", count: 1, apiKey: merchant.secretKey)
        try await fixture.makeRedelivered(count: 1)

        // Markers can be written, the work cannot: its table is away (an outage for both stores).
        try await execute(fixture, "ALTER TABLE processed_requests RENAME TO processed_requests_away")
        let restored = Mutex(false)
        TestResources.onExit("processed_requests of \(fixture.directory.lastPathComponent)") {
            guard !restored.withLock({ $0 }) else { return }
            try? await execute(fixture, "ALTER TABLE processed_requests_away RENAME TO processed_requests")
        }
        for stop in 1...2 {
            let worker = try ObservedWorker(fixture, name: "stopped-\(stop)", environment: ["LOG_LEVEL": "info"])
            TestResources.onExit("worker stopped-\(stop)") { await worker.process.terminate() }
            do {
                _ = try await worker.pollMetric("customer_worker_store_failures_total", atLeast: 1, timeout: .seconds(30))
            } catch {
                Issue.record("the worker did not pause: \((try? String(contentsOfFile: worker.log, encoding: .utf8))?.suffix(2000) ?? "")")
                throw error
            }
            if stop == 1 {
                #expect(try await markers(fixture) == 1, "the marker committed before the work failed")
            }
            #expect(try await worker.stop() == 0, "SIGTERM \(stop)")
            let log = try String(contentsOfFile: worker.log, encoding: .utf8)
            if stop == 1 {
                #expect(log.contains("commands handed back to the queue"), "handed back, not requeued: \(log.suffix(1500))")
                #expect(!log.contains("returned to the queue"))
            }
            #expect(!log.contains("dead-letter queue"))
        }
        #expect(try await markers(fixture) <= 1, "a graceful stop adds no marker on top of one it left")

        try await execute(fixture, "ALTER TABLE processed_requests_away RENAME TO processed_requests")
        restored.withLock { $0 = true }
        _ = try await fixture.withWorker { try await fixture.expectAnsweredOnce(commands) }
        #expect(try await fixture.store.customerCount() == 1)
        #expect(try await markers(fixture) == 0, "the work transaction removed its marker")
        await fixture.tearDown()
    }

    private func execute(_ fixture: WorkerFixture, _ sql: String) async throws {
        switch fixture.kind {
        case .sqlite:
            try await DatabaseQueue(path: fixture.configuration.databaseURL).write { try $0.execute(sql: sql) }
        case .postgres:
            try await PostgresFaults.psql(fixture.configuration.databaseURL, sql)
        }
    }

    /// Unfinished attempts recorded for the commands (the sum of the markers' counts).
    private func markers(_ fixture: WorkerFixture) async throws -> Int {
        let sql = "SELECT COALESCE(SUM(attempts), 0) FROM handling_attempts"
        switch fixture.kind {
        case .sqlite:
            return try await DatabaseQueue(path: fixture.configuration.databaseURL).read { try Int.fetchOne($0, sql: sql) ?? 0 }
        case .postgres:
            return Int(try await PostgresFaults.psql(fixture.configuration.databaseURL, sql, tuplesOnly: true)) ?? -1
        }
    }
}
