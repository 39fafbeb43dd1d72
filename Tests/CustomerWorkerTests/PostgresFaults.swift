import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// PostgreSQL faults for worker tests, through `psql` (Debian's client, installed with the server).
enum PostgresFaults {
    @discardableResult
    static func psql(_ url: String, _ sql: String, tuplesOnly: Bool = false) async throws -> String {
        let output = try await TestBroker.run("/usr/bin/psql", [url, "-v", "ON_ERROR_STOP=1", "-q"] + (tuplesOnly ? ["-tA"] : []) + ["-c", sql])
        return output.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Waits until `sql` (one number) answers at least `minimum`; false after `timeout`.
    static func poll(_ url: String, _ sql: String, atLeast minimum: Int, timeout: Duration) async throws -> Bool {
        try await waitFor(timeout: timeout, every: .milliseconds(50)) {
            Int(try await psql(url, sql, tuplesOnly: true)).map { $0 >= minimum } ?? false
        }
    }

    /// Backends of this database (other than the lock holder) waiting for a lock.
    static let lockWaiters = """
        SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
        AND application_name NOT LIKE 'lock-holder-%'
        """

    /// Holds `LOCK TABLE customers IN ACCESS EXCLUSIVE MODE` in an open transaction (a psql
    /// process) while `body` runs; released on every path.
    static func withCustomersLocked<T>(_ fixture: WorkerFixture, _ body: () async throws -> T) async throws -> T {
        let url = fixture.configuration.databaseURL
        let holder = "lock-holder-\(UUID().uuidString.prefix(8).lowercased())"
        let pid = try TestBroker.spawn(
            "/usr/bin/psql", [url, "-c", "BEGIN; LOCK TABLE customers IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT;"],
            environment: ["PGAPPNAME": holder], output: fixture.directory.appendingPathComponent("\(holder).log").path,
            errorsToOutput: true)
        func release() async {
            _ = try? await psql(url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '\(holder)'")
            kill(pid, SIGKILL)
            var status: Int32 = 0
            _ = waitpid(pid, &status, 0)
        }
        do {
            let held = """
                SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                WHERE c.relname = 'customers' AND l.mode = 'AccessExclusiveLock' AND l.granted
                """
            #expect(try await poll(url, held, atLeast: 1, timeout: .seconds(10)), "the lock is held")
            let result = try await body()
            await release()
            return result
        } catch {
            await release()
            throw error
        }
    }
}

extension WorkerFixture {
    /// Publishes commands with the merchant's key, without asking for direct replies.
    func publish(prefix: String, count: Int, apiKey: String) async throws -> [CommandClient.Command] {
        let commands = (0..<count).map {
            CommandClient.Command(body: Array(#"{"externalId":"\#(prefix)-\#($0)"}"#.utf8), messageID: "\(prefix)-\($0)",
                                  correlationID: "\(prefix)-\($0)")
        }
        try await client.publish(commands, apiKey: apiKey, wantReplies: false)
        return commands
    }

    /// Takes `count` commands off the command queue and gives them back unacknowledged: the
    /// broker redelivers them with `redelivered` set, as after a worker died holding them.
    func makeRedelivered(count: Int) async throws {
        let session = try await TestBroker.session("redeliver")
        do {
            try await session.setPrefetch(UInt16(count))
            try await session.consumeCommandQueues(of: configuration)
            var taken = 0
            let deadline = ContinuousClock.now + .seconds(10)
            while taken < count, ContinuousClock.now < deadline {
                taken += try await session.nextDeliveries(maximum: count - taken, wait: .milliseconds(500)).count
            }
            #expect(taken == count)
        } catch {
            await session.close()
            throw error
        }
        await session.close()
    }

    /// Waits for one reply per command on the replies queue, then a second longer for duplicates;
    /// expects each answered once and nothing dead-lettered.
    @discardableResult
    func expectAnsweredOnce(_ commands: [CommandClient.Command], timeout: Duration = .seconds(30)) async throws -> [Delivery] {
        let expected = Set(commands.map(\.messageID))
        var replies: [Delivery] = []
        let deadline = ContinuousClock.now + timeout
        while !expected.isSubset(of: Set(replies.compactMap(\.properties.correlationID))), ContinuousClock.now < deadline {
            replies += try await drain(configuration.names.repliesQueue, idle: .milliseconds(300))
        }
        replies += try await drain(configuration.names.repliesQueue, idle: .seconds(1))
        let answered = replies.compactMap(\.properties.correlationID)
        #expect(Set(answered) == expected)
        #expect(answered.count == expected.count, "each once")
        #expect(try await drain(configuration.names.deadLetterQueue, idle: .milliseconds(100)).isEmpty, "nothing dead-lettered")
        return replies
    }
}
