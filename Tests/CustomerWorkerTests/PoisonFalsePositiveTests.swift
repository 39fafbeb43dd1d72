import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// A healthy redelivered command is never dead-lettered as "crashed": not when its consumer
/// connection blips while its transaction runs, not when the worker is stopped during a database
/// outage with it in hand. (PostgreSQL: the lock that holds the transaction is a table lock.)
@Suite("Worker: poison isolation without false positives", .closesResources,
       .enabled(if: TestBroker.enabled && TestPostgres.enabled, "needs scripts/broker.sh and scripts/postgres.sh"))
struct PoisonFalsePositiveTests {
    static func consumerConnection(of worker: ObservedWorker) -> String {
        "customer-worker \(ProcessInfo.processInfo.hostName) \(worker.process.pid) consumer"
    }

    @Test func aConnectionBlipWhileARedeliveredCommandIsInItsTransaction() async throws {
        let fixture = try await WorkerFixture("blip", store: .postgres)
        var workers: [ObservedWorker] = []
        do {
            let merchant = try await fixture.merchant()
            let commands = try await fixture.publish(prefix: "blip", count: 1, apiKey: merchant.secretKey)
            try await fixture.makeRedelivered(count: 1)
            let url = fixture.configuration.databaseURL
            try await PostgresFaults.withCustomersLocked(fixture) {
                // Waiting for a connection that cannot come is bounded by connect_timeout; a
                // statement whose backend was terminated can leave postgres-nio waiting on the
                // half-closed socket, bounded by answer_timeout. The log says what the worker did
                // if it never pauses.
                let first = try ObservedWorker(fixture, name: "first", environment: [
                    "DATABASE_URL": fixture.quickToGiveUpDatabaseURL, "LOG_LEVEL": "info",
                ])
                workers.append(first)
                // Its marker is committed and its work transaction waits for the table.
                #expect(try await PostgresFaults.poll(url, PostgresFaults.lockWaiters, atLeast: 1, timeout: .seconds(30)))
                let second = try ObservedWorker(fixture, name: "second")
                workers.append(second)
                #expect(try await second.poll("/readyz", until: 200, timeout: .seconds(30)))
                #expect(try await TestBroker.closeConnections(named: Self.consumerConnection(of: first)) == 1)
                // The broker redelivers the command (to either worker): the second one waits on
                // the marker held by the first one's transaction, or the first one takes it back.
                _ = try await PostgresFaults.poll(url, PostgresFaults.lockWaiters, atLeast: 2, timeout: .seconds(5))
            }
            try await fixture.expectAnsweredOnce(commands)
            #expect(try await fixture.store.customerCount() == 1)
            for worker in workers {
                #expect(await worker.metric(#"customer_worker_dead_lettered_total{reason="crashed"}"#) == 0)
                #expect(try await worker.stop() == 0)
            }
        } catch {
            for worker in workers { await worker.process.terminate() }
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    /// This once hung in about one run of four: when the backend is terminated while the statement
    /// waits for its lock, postgres-nio can leave the statement unanswered for good (the socket in
    /// CLOSE-WAIT, the query never failed, even once its connection is closed), so the worker
    /// neither paused nor stopped on SIGTERM. `PostgresStore.transaction` now gives up on such a
    /// transaction after `answer_timeout` (10 s here): the worker pauses, and SIGTERM stops it.
    @Test
    func sigtermDuringAnOutageWithARedeliveredCommandInHand() async throws {
        let fixture = try await WorkerFixture("sigterm-outage", store: .postgres)
        var workers: [ObservedWorker] = []
        let url = fixture.configuration.databaseURL
        do {
            let merchant = try await fixture.merchant()
            let commands = try await fixture.publish(prefix: "outage", count: 1, apiKey: merchant.secretKey)
            try await fixture.makeRedelivered(count: 1)
            try await PostgresFaults.withCustomersLocked(fixture) {
                // Waiting for a connection that cannot come is bounded by connect_timeout; a
                // statement whose backend was terminated can leave postgres-nio waiting on the
                // half-closed socket, bounded by answer_timeout. The log says what the worker did
                // if it never pauses.
                let first = try ObservedWorker(fixture, name: "first", environment: [
                    "DATABASE_URL": fixture.quickToGiveUpDatabaseURL, "LOG_LEVEL": "info",
                ])
                workers.append(first)
                // Marker committed, work transaction waiting: now the database goes away.
                #expect(try await PostgresFaults.poll(url, PostgresFaults.lockWaiters, atLeast: 1, timeout: .seconds(30)))
                try await TestPostgres.setAcceptingConnections(url, false)
                let paused = try await first.poll("/readyz", until: 503, timeout: .seconds(120))
                #expect(paused, "paused: \(paused ? "" : (try? String(contentsOfFile: first.log, encoding: .utf8).suffix(3000)) ?? "")")
                #expect(try await first.stop() == 0, "SIGTERM: the command goes back to the queue")
                try await TestPostgres.setAcceptingConnections(url, true)
            }
            let second = try ObservedWorker(fixture, name: "second")
            workers.append(second)
            try await fixture.expectAnsweredOnce(commands)
            #expect(await second.metric(#"customer_worker_dead_lettered_total{reason="crashed"}"#) == 0)
            #expect(try await fixture.store.customerCount() == 1)
            #expect(try await second.stop() == 0)
        } catch {
            for worker in workers { await worker.process.terminate() }
            try? await TestPostgres.setAcceptingConnections(url, true)
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }
}
