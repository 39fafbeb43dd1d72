import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import GRDB
import Testing

/// Another process holding the database's write lock: the worker must neither reply to nor
/// acknowledge what it could not commit, must retry with backoff, and must dead-letter a command
/// it can never handle instead of requeueing it forever.
@Suite("Worker: transient failures", .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct TransientFailureTests {
    /// Holds SQLite's write lock on `path` for `duration`, on a thread of its own (as another
    /// process would), and returns once the lock is taken.
    private func holdWriteLock(on path: String, for duration: Duration) async throws {
        let locked = AsyncStream.makeStream(of: Void.self)
        let queue = try DatabaseQueue(path: path)
        let thread = Thread {
            try? queue.inDatabase { db in
                try db.execute(sql: "BEGIN IMMEDIATE")
                locked.continuation.yield()
                Thread.sleep(forTimeInterval: Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18)
                try db.execute(sql: "COMMIT")
            }
        }
        thread.start()
        for await _ in locked.stream { break }
    }

    @Test func aBusyDatabaseDelaysTheReplyButLosesNothing() async throws {
        var tuning = WorkerFixture.Tuning()
        tuning.busyTimeout = .milliseconds(100)
        tuning.transientAttempts = 20
        tuning.transientBackoff = RecoveryPolicy(initialDelay: .milliseconds(100), maximumDelay: .milliseconds(300))
        let fixture = try await WorkerFixture("busy", tuning: tuning)
        let merchant = try await fixture.merchant()
        let reply = try await fixture.withWorker {
            try await holdWriteLock(on: fixture.configuration.databaseURL, for: .milliseconds(1500))
            let started = ContinuousClock.now
            let reply = try await fixture.send(json: #"{"externalId":"busy-1"}"#, apiKey: merchant.secretKey)
            #expect(ContinuousClock.now - started >= .milliseconds(500), "the reply came while the database was locked")
            return reply
        }
        #expect(reply.properties.type == "CustomerCreated")
        #expect(try await fixture.store.customerCount() == 1)
        await fixture.tearDown()
    }

    @Test func aCommandThatCanNeverBeHandledIsDeadLettered() async throws {
        var tuning = WorkerFixture.Tuning()
        tuning.busyTimeout = .milliseconds(50)
        tuning.transientAttempts = 1
        tuning.transientBackoff = RecoveryPolicy(initialDelay: .milliseconds(50), maximumDelay: .milliseconds(100))
        tuning.deliveryLimit = 2
        let fixture = try await WorkerFixture("poison", tuning: tuning)
        let merchant = try await fixture.merchant()
        let deadLetters = try await TestBroker.session("poison.dead")
        try await deadLetters.consume(queue: fixture.configuration.names.deadLetterQueue)
        let dead = try await fixture.withWorker {
            try await holdWriteLock(on: fixture.configuration.databaseURL, for: .seconds(20))
            try await fixture.client.publish([.init(body: Array(#"{"externalId":"never"}"#.utf8), messageID: "poison-1")],
                                             apiKey: merchant.secretKey, wantReplies: true)
            return try await deadLetters.nextDeliveries(maximum: 1, wait: .seconds(15))
        }
        #expect(dead.first?.properties.messageID == "poison-1")
        #expect(try await fixture.client.replies(count: 1, timeout: .milliseconds(200)).isEmpty, "a reply for an uncommitted command")
        await deadLetters.close()
        await fixture.tearDown()
    }
}
