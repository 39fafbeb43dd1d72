import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// `reply_to` copies are best effort, isolated from other commands, and only to allowed names.
@Suite("Worker: reply_to", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct ReplyToTests {
    private func command(_ id: String) -> CommandClient.Command {
        CommandClient.Command(body: Array(#"{"externalId":"\#(id)"}"#.utf8), messageID: id, correlationID: id)
    }

    /// A command whose reply_to queue refuses every message (max length 0, reject-publish) in the
    /// same batch as 50 good ones: the 50 are answered once and promptly, the refused copy is
    /// counted, and the events copy of every reply, the refused one's included, stands.
    @Test func aRefusingReplyToQueueHurtsNoOtherCommand() async throws {
        let fixture = try await WorkerFixture("refusing")
        let merchant = try await fixture.merchant()
        let owner = try await TestBroker.session("refusing.owner")
        let refusing = try await owner.declareQueueOnce(.init(name: "", durable: false, exclusive: true, arguments: [
            "x-max-length": .int(0), "x-overflow": "reject-publish",
        ]))
        #expect(refusing.hasPrefix("amq.gen-"), "server-named, so allowed by default")

        // Everything waits in the queue before the worker starts: one batch.
        let good = (0..<50).map { command("good-\($0)") }
        try await fixture.client.publish(Array(good[..<25]), apiKey: merchant.secretKey, wantReplies: true)
        try await fixture.publishRaw([(#"{"externalId":"refused-reply-to"}"#, "refused-reply-to", refusing)], apiKey: merchant.secretKey)
        try await fixture.client.publish(Array(good[25...]), apiKey: merchant.secretKey, wantReplies: true)

        let worker = try ObservedWorker(fixture, name: "worker", environment: ["LOG_LEVEL": "debug"])
        let replies = try await fixture.collectReplies(for: Set(good.map(\.messageID)), timeout: .seconds(60), settle: .seconds(2))

        let answered = replies.compactMap(\.properties.correlationID)
        #expect(Set(answered) == Set(good.map(\.messageID)), "every good command answered")
        #expect(answered.count == 50, "answered once each, got \(answered.count)")
        // Held back would mean retried, redelivered or reconnected: none of them happened.
        #expect(replies.allSatisfy { $0.properties.headers["x-replayed"] == .bool(false) }, "no command was handled twice")
        #expect(await worker.metric("customer_worker_reconnects_total") ?? 0 == 0, "the refused copy cost no connection")
        #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
        #expect(await worker.metric(#"customer_worker_reply_to_undelivered_total{reason="nacked"}"#) == 1)
        #expect(await worker.metric("customer_worker_transient_failures_total") ?? 0 == 0, "no retry for a reply_to copy")

        let events = try await fixture.drain(fixture.configuration.names.repliesQueue)
        #expect(events.count == 51, "one events copy per command")
        #expect(Set(events.compactMap(\.properties.correlationID)) == Set(good.map(\.messageID) + ["refused-reply-to"]))
        #expect(try await fixture.drain(fixture.configuration.names.deadLetterQueue, idle: .milliseconds(200)).isEmpty)
        #expect(try await worker.stop() == 0)
        await owner.close()
        await fixture.tearDown()
    }

    /// A reply_to naming an ordinary queue is ignored unless REPLY_TO_PATTERN allows it; the
    /// command is handled normally either way.
    @Test func onlyAllowedReplyToNamesGetACopy() async throws {
        let fixture = try await WorkerFixture("allow-list")
        let merchant = try await fixture.merchant()
        let prefix = fixture.configuration.names.commandQueue
        let victim = "\(prefix).victim"
        let allowed = "\(prefix).allowed-replies"
        let owner = try await TestBroker.session("allow-list.owner")
        for queue in [victim, allowed] {
            try await owner.declareQueueOnce(.init(name: queue, autoDelete: false))
        }
        let pattern = NSRegularExpression.escapedPattern(for: prefix) + #"\.allowed-.*"#
        let worker = try ObservedWorker(fixture, name: "worker", environment: ["REPLY_TO_PATTERN": pattern, "LOG_LEVEL": "info"])
        try await fixture.publishRaw([
            (#"{"externalId":"to-victim"}"#, "to-victim", victim),
            (#"{"externalId":"to-allowed"}"#, "to-allowed", allowed),
            (#"{"externalId":"to-dead-letters"}"#, "to-dead-letters", fixture.configuration.names.deadLetterQueue),
        ], apiKey: merchant.secretKey)

        var events: [Delivery] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while events.count < 3, ContinuousClock.now < deadline {
            events += try await fixture.drain(fixture.configuration.names.repliesQueue)
        }
        #expect(Set(events.compactMap(\.properties.correlationID)) == ["to-victim", "to-allowed", "to-dead-letters"], "all handled normally")
        #expect(events.allSatisfy { $0.properties.type == "CustomerCreated" })
        #expect(try await fixture.drain(victim, idle: .milliseconds(300)).isEmpty, "the worker published into a queue it was not allowed to")
        #expect(try await fixture.drain(fixture.configuration.names.deadLetterQueue, idle: .milliseconds(300)).isEmpty)
        #expect(try await fixture.drain(allowed).compactMap(\.properties.correlationID) == ["to-allowed"])
        #expect(await worker.metric(#"customer_worker_reply_to_undelivered_total{reason="refused"}"#) == 2)
        #expect(try await worker.stop() == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("reply_to not allowed"))
        for queue in [victim, allowed] { try? await owner.deleteQueue(queue) }
        await owner.close()
        await fixture.tearDown()
    }

    @Test func thePolicyAllowsDirectReplyToAndServerNamedQueuesOnly() throws {
        let defaults = ReplyToPolicy()
        #expect(defaults.allows("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAxMjM0NTY3OAAAAAAAAAAAAA==.1A2b3C"))
        #expect(defaults.allows("amq.gen-JzTY20BRgKO-HjmUJj0wLg"))
        #expect(!defaults.allows("amq.rabbitmq.reply-to"), "the bare pseudo-queue is a channel error when published to")
        #expect(!defaults.allows("amq.gen-"))
        #expect(!defaults.allows("customers.create.dead"))
        #expect(!defaults.allows("amq.gen-" + String(repeating: "x", count: 300)), "longer than a routing key can be")
        let pattern = try ReplyToPolicy(pattern: #"replies\.[a-z]+"#)
        #expect(pattern.allows("replies.crm"))
        #expect(!pattern.allows("replies.crm.extra"), "the whole name must match")
        #expect(!pattern.allows("xreplies.crm"))
        #expect(throws: (any Error).self) { try ReplyToPolicy(pattern: "(unclosed") }
    }

    /// Whatever the pattern, the topology's queues are refused; the set follows the names (a
    /// setting read after the pattern, or a prefix set later) and survives a new policy.
    @Test func thePolicyRefusesTheWorkersOwnQueuesWhateverThePattern() throws {
        var configuration = try WorkerConfiguration(lookup: { ["REPLY_TO_PATTERN": ".*", "COMMAND_QUEUE": "jobs.in"][$0] })
        for queue in ["jobs.in", "customers.create.dead", "customers.replies"] {
            #expect(configuration.replyTo.decide(queue) == .refused(queue), "\(queue)")
        }
        #expect(configuration.replyTo.allows("customers.create"), "no longer the command queue")
        configuration.names = TopologyNames(prefix: "t1")
        #expect(!configuration.replyTo.allows("t1.create") && !configuration.replyTo.allows("t1.create.dead") && !configuration.replyTo.allows("t1.replies"))
        configuration.replyTo = try ReplyToPolicy(pattern: "t1\\..*")
        #expect(!configuration.replyTo.allows("t1.create"), "a new policy gets the own queues too")
        #expect(configuration.replyTo.allows("t1.elsewhere"))
        #expect(configuration.replyTo.allows("amq.gen-JzTY20BRgKO-HjmUJj0wLg"))
        let strict = try WorkerConfiguration(lookup: { ["REPLY_TO_SERVER_NAMED": "refuse", "REPLY_TO_PATTERN": "x"][$0] })
        #expect(!strict.replyTo.allows("amq.gen-JzTY20BRgKO-HjmUJj0wLg"), "REPLY_TO_SERVER_NAMED=refuse")
        #expect(strict.replyTo.allows("amq.rabbitmq.reply-to.g1h2AA5yZXBseUAx.1A2b3C"), "direct reply-to stays allowed")
        #expect(strict.replyTo.pattern == "x")
        #expect(throws: ConfigurationError.self) { try WorkerConfiguration(lookup: { ["REPLY_TO_SERVER_NAMED": "maybe"][$0] }) }
    }
}
