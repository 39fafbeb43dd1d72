import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// The worker as real processes, on SQLite and on PostgreSQL: replicas on one database, kill -9, SIGTERM.
@Suite("Worker processes", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct WorkerProcessTests {
    /// Commands in the mid-stream tests: enough that a worker is still busy when it is stopped.
    private let total = 10_000

    private func commands(_ count: Int, distinct: Int? = nil) -> [CommandClient.Command] {
        (0..<count).map { index in
            let id = index % (distinct ?? count)
            return CommandClient.Command(body: Array(#"{"externalId":"ext-\#(id)","name":"Customer \#(id)","email":"c\#(id)@example.com"}"#.utf8),
                                         messageID: "command-\(index)")
        }
    }

    /// Collects replies until every command id in `expected` was answered (replays may repeat some).
    private func awaitAnswers(_ fixture: WorkerFixture, for expected: Set<String>, timeout: Duration) async throws -> [Delivery] {
        var replies: [Delivery] = []
        var answered = Set<String>()
        let deadline = ContinuousClock.now + timeout
        while !expected.isSubset(of: answered), ContinuousClock.now < deadline {
            let batch = try await fixture.client.replies(count: expected.count, timeout: .milliseconds(500))
            replies += batch
            batch.forEach { answered.insert($0.properties.correlationID ?? "") }
        }
        Conformance.record(Array(replies.prefix(20)))
        return replies
    }

    private func logFile(_ fixture: WorkerFixture, _ name: String) -> String {
        fixture.directory.appendingPathComponent("\(name).log").path
    }

    @Test(arguments: StoreKind.all)
    func threeReplicasOnOneDatabaseMakeExactlyOneCustomerPerExternalId(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("replicas", store: kind)
        let merchant = try await fixture.merchant()
        let workers = try (0..<3).map { try WorkerProcess(environment: fixture.environment, logFile: logFile(fixture, "worker-\($0)")) }

        let batch = commands(300, distinct: 100).shuffled()
        try await fixture.client.publish(batch, apiKey: merchant.secretKey, wantReplies: true)
        let replies = try await awaitAnswers(fixture, for: Set(batch.map(\.messageID)), timeout: .seconds(300))

        #expect(replies.count == 300)
        #expect(try await fixture.store.customerCount() == 100)
        // Every reply for one externalId is the same bytes, whoever answered it.
        var bodies: [String: Set<[UInt8]>] = [:]
        for reply in replies {
            let customer = try #require(try json(reply)["customer"] as? [String: Any])
            bodies[customer["externalId"] as? String ?? "", default: []].insert(reply.body)
        }
        #expect(bodies.count == 100)
        #expect(bodies.values.allSatisfy { $0.count == 1 })
        for worker in workers { worker.signal(SIGTERM) }
        for worker in workers { #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0) }
        await fixture.tearDown()
    }

    /// Publishes the commands, starts a worker and returns once it has answered 100 of them: early
    /// enough that the worker is far from done (the tests check that it was).
    private func startMidStream(_ fixture: WorkerFixture, _ batch: [CommandClient.Command]) async throws -> (WorkerProcess, [Delivery]) {
        let merchant = try await fixture.merchant()
        try await fixture.client.publish(batch, apiKey: merchant.secretKey, wantReplies: true)
        let first = try WorkerProcess(environment: fixture.environment, logFile: logFile(fixture, "first"))
        var early: [Delivery] = []
        while early.count < 100 {
            let more = try await fixture.client.replies(count: 100 - early.count, timeout: .seconds(30))
            try #require(!more.isEmpty, "the first worker answered nothing")
            early += more
        }
        return (first, early)
    }

    /// Starts a second worker and returns the replies to every command not answered in `early`.
    private func finishWithASecondWorker(_ fixture: WorkerFixture, _ batch: [CommandClient.Command],
                                         early: [Delivery]) async throws -> (WorkerProcess, [Delivery]) {
        let second = try WorkerProcess(environment: fixture.environment, logFile: logFile(fixture, "second"))
        let unanswered = Set(batch.map(\.messageID)).subtracting(early.compactMap(\.properties.correlationID))
        return (second, try await awaitAnswers(fixture, for: unanswered, timeout: .seconds(300)))  // generous: a loaded machine is slow, not wrong
    }

    @Test(arguments: StoreKind.all)
    func killNineMidStreamLosesNothingAndDuplicatesNothing(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("kill9", tuning: .init(prefetch: 64), store: kind)
        let batch = commands(total)
        let (first, early) = try await startMidStream(fixture, batch)
        first.signal(SIGKILL)
        #expect(try await first.waitForExit(timeout: .seconds(5)) == 128 + SIGKILL)
        let atKill = try await fixture.store.customerCount()
        #expect(atKill < total, "the worker finished before it was killed")

        let (second, rest) = try await finishWithASecondWorker(fixture, batch, early: early)
        let replays = (early + rest).filter { $0.properties.headers["x-replayed"] == .bool(true) }.count
        print("kill -9: \(atKill) customers committed at the kill; \(early.count + rest.count) replies for \(total) commands, \(replays) of them replays")
        let answered = Set((early + rest).compactMap(\.properties.correlationID))
        #expect(answered == Set(batch.map(\.messageID)))
        #expect(try await fixture.store.customerCount() == total)
        #expect((early + rest).allSatisfy { $0.properties.type == "CustomerCreated" })
        second.signal(SIGTERM)
        #expect(try await second.waitForExit(timeout: .seconds(15)) == 0)
        await fixture.tearDown()
    }

    @Test(arguments: StoreKind.all)
    func sigtermMidStreamExitsCleanlyAndLosesNothing(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("sigterm", tuning: .init(prefetch: 64), store: kind)
        let batch = commands(total)
        let (first, early) = try await startMidStream(fixture, batch)
        first.signal(SIGTERM)
        #expect(try await first.waitForExit(timeout: .seconds(12)) == 0)
        let afterStop = try await fixture.store.customerCount()
        #expect(afterStop < total, "the worker finished before it was stopped")

        let (second, rest) = try await finishWithASecondWorker(fixture, batch, early: early)
        let all = early + rest
        #expect(Set(all.compactMap(\.properties.correlationID)) == Set(batch.map(\.messageID)))
        // A graceful stop replies to everything it committed: nothing is answered twice.
        #expect(all.count == total)
        #expect(all.allSatisfy { $0.properties.headers["x-replayed"] == .bool(false) })
        #expect(try await fixture.store.customerCount() == total)
        second.signal(SIGTERM)
        #expect(try await second.waitForExit(timeout: .seconds(15)) == 0)
        await fixture.tearDown()
    }
}
