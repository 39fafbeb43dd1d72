import AMQP
import BrokerTestSupport
import CreateCustomer
import CustomerWorker
import Foundation
import GRDB
import Testing

/// A command that crashes the worker takes only itself to the dead-letter queue.
@Suite("Worker: poison commands", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct PoisonTests {
    /// The worker crashes (fault injection, armed only by its environment variable) on one
    /// command of a batch of 20. Restarted as a supervisor would, it must answer the 19 others
    /// and dead-letter the poison alone; on either store (the markers live in the database).
    @Test(arguments: StoreKind.all)
    func aCrashingCommandAloneEndsInTheDeadLetterQueue(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("poison-crash", store: kind)
        let merchant = try await fixture.merchant()
        let ids = (0..<20).map { "poison-batch-\($0)" }
        let poison = ids[7]
        let commands = ids.map { CommandClient.Command(body: Array(#"{"externalId":"\#($0)"}"#.utf8), messageID: $0, correlationID: $0) }
        try await fixture.client.publish(commands, apiKey: merchant.secretKey, wantReplies: true)
        let good = Set(ids).subtracting([poison])

        var replies: [Delivery] = []
        var workers: [ObservedWorker] = []
        var exits: [Int32] = []
        let deadline = ContinuousClock.now + .seconds(90)
        while !good.isSubset(of: Set(replies.compactMap(\.properties.correlationID))), ContinuousClock.now < deadline {
            var exited = workers.isEmpty
            if let running = workers.last, let status = try await running.process.waitForExit(timeout: .zero) {
                exits.append(status)
                exited = true
            }
            if exited {
                workers.append(try ObservedWorker(fixture, name: "worker-\(workers.count)",
                                                  environment: [FaultInjection.crashOnExternalIDVariable: poison],
                                                  faultInjecting: true))
            }
            replies += try await fixture.client.replies(count: good.count, timeout: .milliseconds(300))
        }
        let worker = try #require(workers.last)
        replies += try await fixture.client.replies(count: 100, timeout: .seconds(1))

        let answered = replies.compactMap(\.properties.correlationID)
        #expect(Set(answered) == good, "every batch-mate answered, the poison not")
        // The first delivery, then one per unfinished attempt until HandlingAttempt.crashesBeforeDeadLetter.
        // Counted from the workers' logs: a worker that exited for another reason (it could not
        // start, say) was restarted as a supervisor would, and is shown, not counted.
        let exited = zip(exits, workers).map { status, worker in
            (status: status, log: (try? String(contentsOfFile: worker.log, encoding: .utf8)) ?? "")
        }
        let crashes = exited.filter { $0.log.contains(FaultInjection.crashMessage) }.count
        let story = exited.enumerated().map { index, exit in
            let lines = exit.log.split(separator: "\n").filter { line in
                ["fault injection", "Fatal error", " error ", " critical ", " warning ", "dead-letter"].contains { line.contains($0) }
            }
            return "worker-\(index) exited with \(exit.status):\n  " + lines.suffix(30).joined(separator: "\n  ")
        }.joined(separator: "\n")
        if crashes != exits.count { print("poison: \(exits.count - crashes) worker(s) exited without crashing on the poison:\n\(story)") }
        #expect(crashes >= 1 && crashes <= HandlingAttempt.crashesBeforeDeadLetter + 1, "crashes: \(crashes); exits:\n\(story)")
        let dead = try await fixture.drain(fixture.configuration.names.deadLetterQueue)
        #expect(dead.compactMap(\.properties.messageID) == [poison], "only the poison is dead-lettered")
        #expect(try await fixture.store.customerCount() == 19)
        #expect(await worker.metric(#"customer_worker_dead_lettered_total{reason="crashed"}"#) == 1)
        #expect(try await worker.stop() == 0)
        await fixture.tearDown()
    }

    /// Without the environment variable, the same command is just a command.
    @Test func faultInjectionIsOffUnlessNamed() {
        #expect(!FaultInjection.fromEnvironment([:]).isArmed)
        #expect(!FaultInjection.fromEnvironment([FaultInjection.crashOnExternalIDVariable: ""]).isArmed)
        #expect(FaultInjection.fromEnvironment([FaultInjection.crashOnExternalIDVariable: "x"]).crashOnExternalID == "x")
    }

    /// A stored plan no import would accept (written by hand): the command of that merchant
    /// fails on its own and is dead-lettered at once with a clear error; the commands of another
    /// merchant in the same batch are answered.
    @Test func aCommandFailingOnItsOwnIsDeadLetteredAlone() async throws {
        let fixture = try await WorkerFixture("poison-plan")
        let healthy = try await fixture.merchant()
        let broken = try await fixture.merchant(catalog: """
            {"plans":[{"id":"pro","name":"Pro","currency":"USD","price":900,"billingCadence":"monthly","trialDays":14,
            "isPrivate":false,"status":"available","default":true}]}
            """)
        try await DatabaseQueue(path: fixture.configuration.databaseURL).write { db in
            try db.execute(sql: "UPDATE plans SET trial_days = 9223372036854775807 WHERE merchant_id = ?", arguments: [broken.merchantId])
        }
        let good = (0..<10).map { CommandClient.Command(body: Array(#"{"externalId":"plan-ok-\#($0)"}"#.utf8), messageID: "plan-ok-\($0)") }
        try await fixture.client.publish(Array(good[..<5]), apiKey: healthy.secretKey, wantReplies: true)
        try await fixture.client.publish([.init(body: Array(#"{"externalId":"plan-broken"}"#.utf8), messageID: "plan-broken")],
                                         apiKey: broken.secretKey, wantReplies: true)
        try await fixture.client.publish(Array(good[5...]), apiKey: healthy.secretKey, wantReplies: true)

        let worker = try ObservedWorker(fixture, name: "worker")
        let replies = try await fixture.collectReplies(for: Set(good.map(\.messageID)), timeout: .seconds(20))
        #expect(Set(replies.compactMap(\.properties.correlationID)) == Set(good.map(\.messageID)))
        let dead = try await fixture.drain(fixture.configuration.names.deadLetterQueue)
        #expect(dead.compactMap(\.properties.messageID) == ["plan-broken"])
        #expect(await worker.metric(#"customer_worker_dead_lettered_total{reason="failed"}"#) == 1)
        #expect(try await worker.stop() == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("trialDays 9223372036854775807 is out of range"), "the error names the plan field")
        await fixture.tearDown()
    }
}
