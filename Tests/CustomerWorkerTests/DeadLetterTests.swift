import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// `customer-worker dead-letters`, the real executable against the real broker: dead letters made
/// by the broker itself (commands rejected without requeue from the quorum command queue).
@Suite("Dead-letter tooling", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct DeadLetterTests {
    /// Runs the CLI with the fixture's settings; standard error goes to the output too.
    private func cli(_ fixture: WorkerFixture, _ arguments: [String], extra: [String: String] = [:]) async throws -> (status: Int32, output: String) {
        try await TestBroker.runCapturing(WorkerProcess.executable, ["dead-letters"] + arguments,
                                          environment: fixture.environment.merging(extra) { $1 })
    }

    /// Only standard output (the JSON or table), for parsing.
    private func cliOutput(_ fixture: WorkerFixture, _ arguments: [String]) async throws -> (status: Int32, output: String) {
        try await TestBroker.runCapturing(WorkerProcess.executable, ["dead-letters"] + arguments, environment: fixture.environment,
                                          errorsToOutput: false)
    }

    private func jsonLines(_ output: String) throws -> [[String: Any]] {
        try output.split(separator: "\n").map { line in
            try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any], "\(line)")
        }
    }

    @Test func listAndShowDescribeDeadLettersWithoutTheKeyAndLeaveThemInTheQueue() async throws {
        try await withFixture("dead-list") { fixture in
            let merchant = try await fixture.merchant()
            let ids = (0..<3).map { "dead-list-\($0)" }
            try await fixture.deadLetter(ids.map { (#"{"externalId":"ext-\#($0)"}"#, $0) }, apiKey: merchant.secretKey)
            let strangeKey = "not-a-key-but-maybe-a-secret"
            try await fixture.deadLetter([("not json at all", "dead-list-odd")], apiKey: strangeKey)
            let keyID = "sk_" + String(merchant.secretKey.dropFirst(3).prefix(16))

            let listed = try await cliOutput(fixture, ["list", "--json"])
            #expect(listed.status == 0, "\(listed.output)")
            let lines = try jsonLines(listed.output)
            #expect(lines.compactMap { $0["id"] as? String }.sorted() == (ids + ["dead-list-odd"]).sorted())
            for line in lines {
                #expect(line["reason"] as? String == "rejected")
                #expect(fixture.configuration.commandQueues.contains(line["queue"] as? String ?? ""), "\(line["queue"] ?? "")")
                #expect(line["deaths"] as? Int == 1)
                #expect(line["ageSeconds"] is Int)
                #expect(line["deadLetteredAt"] is String)
            }
            let first = try #require(lines.first { $0["id"] as? String == ids[0] })
            #expect(first["apiKeyId"] as? String == keyID)
            #expect(first["externalId"] as? String == "ext-\(ids[0])")
            let odd = try #require(lines.first { $0["id"] as? String == "dead-list-odd" })
            #expect(odd["apiKeyId"] as? String == "hidden")
            #expect(odd["externalId"] == nil)

            // Each reader's dead letters are back in the queue once its connection is gone.
            try await fixture.expectCount(fixture.configuration.names.deadLetterQueue, 4)
            let table = try await cli(fixture, ["list", "--limit", "2"])
            #expect(table.status == 0, "\(table.output)")
            #expect(table.output.contains("API KEY"))
            #expect(table.output.contains("4 dead letter(s) in \(fixture.configuration.names.deadLetterQueue); 2 shown"), "\(table.output)")

            try await fixture.expectCount(fixture.configuration.names.deadLetterQueue, 4)
            let shown = try await cliOutput(fixture, ["show", ids[1]])
            #expect(shown.status == 0, "\(shown.output)")
            let details = try #require(try JSONSerialization.jsonObject(with: Data(shown.output.utf8)) as? [String: Any])
            #expect((details["body"] as? [String: Any])?["externalId"] as? String == "ext-\(ids[1])")
            let headers = try #require((details["properties"] as? [String: Any])?["headers"] as? [String: Any])
            #expect(headers["x-api-key"] as? String == keyID)
            #expect(headers["x-death"] is [Any])
            try await fixture.expectCount(fixture.configuration.names.deadLetterQueue, 4)
            let oddShown = try await cliOutput(fixture, ["show", "dead-list-odd"])
            #expect(oddShown.output.contains("\"bodyText\" : \"not json at all\""), "\(oddShown.output)")

            try await fixture.expectCount(fixture.configuration.names.deadLetterQueue, 4)
            let missing = try await cli(fixture, ["show", "no-such-id"])
            #expect(missing.status != 0)
            #expect(missing.output.contains("not in the dead-letter queue: no-such-id"), "\(missing.output)")

            for output in [listed.output, table.output, shown.output, oddShown.output, missing.output] {
                #expect(!output.contains(merchant.secretKey))
                #expect(!output.contains(strangeKey))
            }
            // Reading removed nothing.
            let left = try await fixture.drain(fixture.configuration.names.deadLetterQueue)
            #expect(left.count == 4)
        }
    }

    @Test func replayByIdThenAllMovesCommandsBackAndTheWorkerAnswersEachOnce() async throws {
        try await withFixture("dead-replay") { fixture in
            let merchant = try await fixture.merchant()
            let ids = (0..<6).map { "dead-replay-\($0)" }
            try await fixture.deadLetter(ids.map { (#"{"externalId":"\#($0)"}"#, $0) }, apiKey: merchant.secretKey)
            let names = fixture.configuration.names

            let dry = try await cli(fixture, ["replay", "--dry-run", ids[0], ids[1]])
            #expect(dry.status == 0, "\(dry.output)")
            #expect(dry.output.contains("would replay \(ids[0])") && dry.output.contains("would replay \(ids[1])"))
            try await fixture.expectCount(names.deadLetterQueue, 6)
            #expect(try await fixture.messageCount(names.commandQueue) == 0)

            let unknown = try await cli(fixture, ["replay", "no-such-id"])
            #expect(unknown.status != 0)
            #expect(unknown.output.contains("not in the dead-letter queue: no-such-id"), "\(unknown.output)")
            try await fixture.expectCount(names.deadLetterQueue, 6)
            let neither = try await cli(fixture, ["replay"])
            #expect(neither.status == 64, "\(neither.output)")

            let one = try await cli(fixture, ["replay", ids[2]])
            #expect(one.status == 0, "\(one.output)")
            #expect(one.output.contains("replayed \(ids[2])"))
            try await fixture.expectCount(names.deadLetterQueue, 5)
            #expect(try await fixture.messageCount(names.commandQueue) == 1)

            // The copy carries no death of its own: dead again, it shows one death and one replay.
            try await fixture.rejectAll(1)
            try await fixture.expectCount(names.deadLetterQueue, 6)
            let again = try jsonLines(try await cliOutput(fixture, ["list", "--json"]).output)
            let replayed = try #require(again.first { $0["id"] as? String == ids[2] })
            #expect(replayed["deaths"] as? Int == 1)
            #expect(replayed["replays"] as? Int == 1)

            try await fixture.expectCount(names.deadLetterQueue, 6)
            let all = try await cli(fixture, ["replay", "--all", "--batch-size", "4"])
            #expect(all.status == 0, "\(all.output)")
            #expect(all.output.contains("6 replayed"), "\(all.output)")
            try await fixture.expectCount(names.deadLetterQueue, 0)
            #expect(try await fixture.messageCount(names.commandQueue) == 6)

            try await fixture.withWorker {
                let replies = try await fixture.waitForReplies(Set(ids), timeout: .seconds(30))
                #expect(Set(replies.compactMap(\.properties.correlationID)) == Set(ids))
                #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
            }
            #expect(try await fixture.store.customerCount() == 6)
        }
    }

    /// kill -9 while a replay holds confirmed copies it has not acknowledged yet (the worst
    /// moment): nothing is lost, that batch is duplicated, and a second replay finishes the job.
    @Test func aReplayKilledBetweenConfirmAndAckDuplicatesAtMostAndLosesNothing() async throws {
        try await withFixture("dead-kill") { fixture in
            let ids = (0..<300).map { "dead-kill-\($0)" }
            try await fixture.deadLetter(ids.map { (#"{"externalId":"\#($0)"}"#, $0) }, apiKey: "sk_0000000000000000_x")
            let names = fixture.configuration.names

            let log = fixture.directory.appendingPathComponent("replay.log").path
            var environment = fixture.environment
            environment[FaultInjection.stallReplayAfterBatchesVariable] = "3"
            environment["SWIFT_BACKTRACE"] = "enable=no"
            let replay = try WorkerProcess(["dead-letters", "replay", "--all", "--batch-size", "50"], environment: environment, logFile: log,
                                           faultInjecting: true)
            // No throwing path between the spawn and the kill.
            let stalled = (try? await waitFor(timeout: .seconds(30)) {
                ((try? String(contentsOfFile: log, encoding: .utf8)) ?? "").contains("replay stalled")
            }) ?? false
            await replay.terminate()
            #expect(stalled, "\((try? String(contentsOfFile: log, encoding: .utf8)) ?? "")")

            // Two batches were acknowledged; the third was confirmed and is back in the queue too.
            try await fixture.expectCount(names.deadLetterQueue, 200)
            let copied = try await fixture.messageCount(names.commandQueue)
            #expect(copied == 150)

            // Replays until the queue is empty: the broker may hand back a few dead letters whose
            // acks it had not applied when the replay's connection closed (more duplicates, no loss).
            var replays = 0
            while try await fixture.waitForCount(names.deadLetterQueue, 0, timeout: .seconds(3)) > 0, replays < 5 {
                let finish = try await cli(fixture, ["replay", "--all"])
                #expect(finish.status == 0, "\(finish.output)")
                replays += 1
            }
            #expect(replays >= 1)
            try await fixture.expectCount(names.deadLetterQueue, 0)
            let copies = try await fixture.drain(names.commandQueue)
            #expect(copies.count >= 350, "the 300 commands and the 50 confirmed before the kill")
            #expect(Set(copies.compactMap(\.properties.messageID)) == Set(ids), "every command is there")
        }
    }

    @Test func purgeNeedsItsConfirmation() async throws {
        try await withFixture("dead-purge") { fixture in
            try await fixture.deadLetter((0..<3).map { (#"{"externalId":"\#($0)"}"#, "dead-purge-\($0)") }, apiKey: "sk_0000000000000000_x")
            let names = fixture.configuration.names

            let refused = try await cli(fixture, ["purge"])
            #expect(refused.status == 64)
            #expect(refused.output.contains("--yes"), "\(refused.output)")
            #expect(try await fixture.messageCount(names.deadLetterQueue) == 3)

            let purged = try await cli(fixture, ["purge", "--yes"])
            #expect(purged.status == 0, "\(purged.output)")
            #expect(purged.output.contains("purged 3 dead letter(s) from \(names.deadLetterQueue)"), "\(purged.output)")
            #expect(try await fixture.messageCount(names.deadLetterQueue) == 0)
        }
    }

    @Test func aMissingQueueIsAClearError() async throws {
        var configuration = WorkerConfiguration()
        configuration.amqpURL = TestBroker.url
        configuration.names = TopologyNames(prefix: TestBroker.uniqueName("test.dead-none"))
        let result = try await TestBroker.runCapturing(WorkerProcess.executable, ["dead-letters", "list"],
                                                       environment: configuration.environmentVariables)
        #expect(result.status != 0)
        #expect(result.output.contains("cannot read dead-letter queue '\(configuration.names.deadLetterQueue)'"), "\(result.output)")
    }
}

/// A fixture torn down on every path, the test's failures included.
func withFixture(_ name: String, _ body: (WorkerFixture) async throws -> Void) async throws {
    let fixture = try await WorkerFixture(name)
    do {
        try await body(fixture)
    } catch {
        await fixture.tearDown()
        throw error
    }
    await fixture.tearDown()
}

extension WorkerFixture {
    /// Publishes the commands to the command queue, then rejects them there without requeue: the
    /// broker dead-letters them (reason `rejected`, with its `x-death` header).
    func deadLetter(_ commands: [(body: String, messageID: String)], apiKey: String) async throws {
        try await publishRaw(commands.map { ($0.body, $0.messageID, nil) }, apiKey: apiKey)
        try await rejectAll(commands.count)
    }

    /// Takes `count` commands from the command queue and rejects each without requeue; returns
    /// once they are all in the dead-letter queue. (The session stays open until then: closed at
    /// once, the broker may return rejected messages it had not discarded yet.)
    func rejectAll(_ count: Int) async throws {
        let before = try await messageCount(configuration.names.deadLetterQueue)
        let session = try await TestBroker.session("reject")
        try await session.setPrefetch(UInt16(min(count, 1000)))
        try await session.consumeCommandQueues(of: configuration)
        var rejected = 0
        while rejected < count {
            let batch = try await session.nextDeliveries(maximum: count - rejected, wait: .seconds(10))
            guard !batch.isEmpty else { break }
            for delivery in batch { await session.reject(delivery.tag, requeue: false) }
            rejected += batch.count
        }
        #expect(rejected == count)
        let arrived = await Result { try await self.waitForCount(configuration.names.deadLetterQueue, before + count) }
        await session.close()
        #expect(try arrived.get() == before + count, "dead letters")
    }

    /// Ready messages in `queue`; the command queue stands for every queue the worker consumes
    /// (under fair share, its shards too).
    func messageCount(_ queue: String) async throws -> Int {
        let queues = queue == configuration.names.commandQueue ? configuration.commandQueues : [queue]
        let session = try await TestBroker.session("count")
        do {
            var count = 0
            for queue in queues { count += Int(try await session.messageCount(queue: queue)) }
            await session.close()
            return count
        } catch {
            await session.close()
            throw error
        }
    }

    /// Waits until `queue` holds exactly `count` ready messages; returns the last count seen.
    func waitForCount(_ queue: String, _ count: Int, timeout: Duration = .seconds(15)) async throws -> Int {
        var last = -1
        _ = try await waitFor(timeout: timeout) {
            last = try await messageCount(queue)
            return last == count
        }
        return last
    }

    /// Expects `queue` to reach exactly `count` ready messages (waiting for it).
    func expectCount(_ queue: String, _ count: Int, sourceLocation: SourceLocation = #_sourceLocation) async throws {
        let last = try await waitForCount(queue, count)
        #expect(last == count, "\(queue): \(last) messages", sourceLocation: sourceLocation)
    }

    /// Replies on the inspection queue until every id in `expected` is answered.
    func waitForReplies(_ expected: Set<String>, timeout: Duration) async throws -> [Delivery] {
        var replies: [Delivery] = []
        let deadline = ContinuousClock.now + timeout
        while !expected.isSubset(of: Set(replies.compactMap(\.properties.correlationID))), ContinuousClock.now < deadline {
            replies += try await drain(configuration.names.repliesQueue, idle: .milliseconds(200))
        }
        Conformance.record(replies)
        return replies
    }
}

extension Result where Failure == any Error {
    /// The outcome of `body`, error included (to close what is open before rethrowing).
    init(_ body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
