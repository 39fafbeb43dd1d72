import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// PostgreSQL refuses the worker's work for a while (a privilege revoked, a lock held past
/// `lock_timeout`): the worker pauses (not ready) with the commands in hand, dead-letters none,
/// and answers each once when the database takes work again.
@Suite("Worker: PostgreSQL refuses for a while", .closesResources,
       .enabled(if: TestBroker.enabled && TestPostgres.enabled, "needs scripts/broker.sh and scripts/postgres.sh"))
struct DatabaseRefusalTests {
    @Test func aRevokedInsertPrivilegePausesTheWorkerUntilTheGrant() async throws {
        try await withWorkerRole("revoked") { fixture, role, worker in
            let first = try await answer(fixture, prefix: "before-revoke", count: 20)
            #expect(first.count == 20)
            // The tables belong to the server's superuser, so REVOKE takes effect for the role.
            try await psql(fixture.configuration.databaseURL, "REVOKE INSERT ON customers FROM \(role)")
            let commands = try await publish(fixture, prefix: "during-revoke", count: 20)
            try await expectPaused(fixture, worker, naming: "SQLSTATE 42501")
            try await psql(fixture.configuration.databaseURL, "GRANT INSERT ON customers TO \(role)")
            try await fixture.expectAnsweredOnce(commands)
            #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(60)))
            #expect(try await fixture.store.customerCount() == 40)
        }
    }

    @Test func aLockTimeoutPausesTheWorkerUntilTheLockIsReleased() async throws {
        try await withWorkerRole("locked", lockTimeout: "200ms") { fixture, _, worker in
            let first = try await answer(fixture, prefix: "before-lock", count: 10)
            #expect(first.count == 10)
            let commands = try await PostgresFaults.withCustomersLocked(fixture) {
                let commands = try await publish(fixture, prefix: "during-lock", count: 20)
                try await expectPaused(fixture, worker, naming: "SQLSTATE 55P03")
                return commands
            }
            try await fixture.expectAnsweredOnce(commands)
        }
    }

    // MARK: Helpers

    /// The worker pauses (not ready), answers nothing, dead-letters nothing, and logs the code.
    private func expectPaused(_ fixture: WorkerFixture, _ worker: ObservedWorker, naming code: String) async throws {
        #expect(try await worker.poll("/readyz", until: 503, timeout: .seconds(20)), "paused: not ready")
        #expect(try await fixture.drain(fixture.configuration.names.repliesQueue, idle: .milliseconds(300)).isEmpty)
        #expect(try await fixture.drain(fixture.configuration.names.deadLetterQueue, idle: .milliseconds(100)).isEmpty)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains(code), "the pause names the code")
    }

    /// A fixture on PostgreSQL whose worker logs in as a role of its own (a superuser would ignore
    /// REVOKE), with every privilege on the tables; the worker runs while `body` runs. Role,
    /// worker and fixture are gone afterwards, on every path.
    private func withWorkerRole(_ name: String, lockTimeout: String? = nil,
                                _ body: (WorkerFixture, String, ObservedWorker) async throws -> Void) async throws {
        let fixture = try await WorkerFixture(name, store: .postgres)
        let role = "worker_\(UUID().uuidString.prefix(8).lowercased())"
        do {
            var setup = """
                CREATE ROLE \(role) LOGIN; GRANT ALL ON SCHEMA public TO \(role);
                GRANT ALL ON ALL TABLES IN SCHEMA public TO \(role); GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO \(role);
                """
            if let lockTimeout { setup += " ALTER ROLE \(role) SET lock_timeout = '\(lockTimeout)';" }
            try await psql(fixture.configuration.databaseURL, setup)
            var url = try #require(URLComponents(string: fixture.configuration.databaseURL))
            url.user = role
            url.password = nil
            let worker = try ObservedWorker(fixture, name: "worker", environment: ["DATABASE_URL": url.string ?? ""])
            do {
                #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(30)))
                try await body(fixture, role, worker)
                #expect(try await worker.stop() == 0)
            } catch {
                await worker.process.terminate()
                throw error
            }
        } catch {
            await dropRole(role, fixture)
            throw error
        }
        await dropRole(role, fixture)
    }

    private func dropRole(_ role: String, _ fixture: WorkerFixture) async {
        await fixture.tearDown()  // drops the database, and with it the role's privileges there
        if let server = TestPostgres.url { _ = try? await psql(server, "DROP ROLE IF EXISTS \(role)") }
    }

    private func psql(_ url: String, _ sql: String) async throws {
        try await PostgresFaults.psql(url, sql)
    }

    private func answer(_ fixture: WorkerFixture, prefix: String, count: Int) async throws -> [Delivery] {
        try await fixture.expectAnsweredOnce(try await publish(fixture, prefix: prefix, count: count))
    }

    private func publish(_ fixture: WorkerFixture, prefix: String, count: Int) async throws -> [CommandClient.Command] {
        try await fixture.publish(prefix: prefix, count: count, apiKey: try await fixture.merchant().secretKey)
    }
}
