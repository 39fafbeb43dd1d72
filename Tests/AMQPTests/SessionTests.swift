import AMQP
import BrokerTestSupport
import Foundation
import Testing

/// Tests against the real broker of `scripts/broker.sh` (see `TestBroker`).
@Suite("AMQP session against the broker", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct SessionTests {
    /// A session with a private, exclusive queue bound to nothing but the default exchange.
    private func sessionWithQueue(_ name: String, prefetch: UInt16 = 100) async throws -> (AMQPSession, String) {
        let session = try await TestBroker.session(name)
        let queue = TestBroker.uniqueName(name)
        try await session.declare(Topology(queues: [.init(name: queue, autoDelete: true)]))
        try await session.setPrefetch(prefetch)
        try await session.enableConfirms()
        return (session, queue)
    }

    private func messages(_ count: Int, to queue: String, prefix: String = "m") -> [OutgoingMessage] {
        (0..<count).map {
            OutgoingMessage(exchange: "", routingKey: queue, body: Array("\(prefix)-\($0)".utf8),
                            properties: MessageProperties(messageID: "\(prefix)-\($0)"))
        }
    }

    /// Consumes until `count` distinct message ids were seen or `timeout` passes.
    private func collect(_ session: AMQPSession, distinct count: Int, ack: Bool = true,
                         timeout: Duration = .seconds(30)) async throws -> [Delivery] {
        var seen = Set<String>()
        var all: [Delivery] = []
        let deadline = ContinuousClock.now + timeout
        while seen.count < count, ContinuousClock.now < deadline {
            let batch = try await session.nextDeliveries(maximum: 500, wait: .milliseconds(500), linger: .milliseconds(5))
            all += batch
            batch.forEach { seen.insert($0.properties.messageID ?? "") }
            if ack, let last = batch.last { await session.ack(last.tag, multiple: true) }
        }
        return all
    }

    @Test func roundTripPreservesBodyPropertiesAndHeaders() async throws {
        let (session, queue) = try await sessionWithQueue("roundtrip")
        try await session.consume(queue: queue)
        let body: [UInt8] = Array("{\"externalId\":\"ext-1\",\"name\":\"Zoë\"}".utf8) + [0, 255]
        let properties = MessageProperties(
            contentType: "application/json", contentEncoding: "utf-8",
            headers: ["x-api-key": "sk_test", "x-replayed": true, "x-attempt": 3, "x-negative": .int(-42)],
            persistent: true, priority: 5, correlationID: "corr-1", replyTo: "replies", expiration: "60000",
            messageID: "msg-1", timestamp: 1_700_000_000, type: "CreateCustomer", userID: "guest", appID: "tests"
        )
        let outcomes = try await session.publish([OutgoingMessage(exchange: "", routingKey: queue, body: body, properties: properties)])
        #expect(outcomes == [.confirmed])

        let deliveries = try await session.nextDeliveries(maximum: 10, wait: .seconds(5))
        let delivery = try #require(deliveries.first)
        #expect(deliveries.count == 1)
        #expect(delivery.body == body)
        #expect(delivery.properties == properties)
        #expect(delivery.routingKey == queue)
        #expect(delivery.exchange == "")
        #expect(!delivery.redelivered)
        #expect(await session.ack(delivery.tag))
    }

    @Test func confirmsEveryMessageOfABatch() async throws {
        let (session, queue) = try await sessionWithQueue("confirms")
        let outcomes = try await session.publish(messages(2000, to: queue))
        #expect(outcomes.count == 2000)
        #expect(outcomes.allSatisfy { $0 == .confirmed })
        // A second batch on the same channel continues the sequence numbers.
        #expect(try await session.publish(messages(10, to: queue, prefix: "again")) == Array(repeating: .confirmed, count: 10))
    }

    @Test func reportsAnUnroutableMandatoryMessageAsReturned() async throws {
        let (session, queue) = try await sessionWithQueue("returns")
        let exchange = TestBroker.uniqueName("returns.unbound")
        try await session.declare(Topology(exchanges: [.init(name: exchange, type: "direct", durable: false)]))
        var batch = messages(3, to: queue)
        batch.insert(OutgoingMessage(exchange: exchange, routingKey: "nowhere", body: Array("lost".utf8),
                                     properties: MessageProperties(messageID: "unroutable")), at: 1)
        let outcomes = try await session.publish(batch)
        #expect(outcomes[0] == .confirmed)
        #expect(outcomes[1] == .returned(replyCode: 312, replyText: "NO_ROUTE"))
        #expect(outcomes[2] == .confirmed && outcomes[3] == .confirmed)
    }

    @Test func neverHoldsMoreUnackedThanThePrefetchWindow() async throws {
        let (session, queue) = try await sessionWithQueue("prefetch", prefetch: 10)
        _ = try await session.publish(messages(35, to: queue))
        try await session.consume(queue: queue)
        let first = try await session.nextDeliveries(maximum: 100, wait: .seconds(5), linger: .milliseconds(300))
        #expect(first.count == 10)
        let whileFull = try await session.nextDeliveries(maximum: 100, wait: .milliseconds(500))
        #expect(whileFull.isEmpty)
        #expect(await session.ack(try #require(first.last).tag, multiple: true))
        let second = try await session.nextDeliveries(maximum: 100, wait: .seconds(5), linger: .milliseconds(300))
        #expect(second.count == 10)
        #expect(second.first?.properties.messageID == "m-10")
    }

    /// The ack goes out while the same session waits for deliveries with a long timeout: with a
    /// prefetch window of one, the broker sends the next message only once it has the ack, so the
    /// waiting call receiving it (seconds before its timeout) proves the ack reached the broker.
    @Test func anAckIsSentWhileTheConsumerWaitsForDeliveries() async throws {
        let (session, queue) = try await sessionWithQueue("ack-while-waiting", prefetch: 1)
        _ = try await session.publish(messages(2, to: queue))
        try await session.consume(queue: queue)
        let first = try #require(try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first)
        let clock = ContinuousClock()
        let started = clock.now
        let waiting = Task { try await session.nextDeliveries(maximum: 1, wait: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(300))  // the wait is under way
        #expect(await session.ack(first.tag))
        let next = try await waiting.value
        #expect(next.first?.properties.messageID == "m-1")
        // Far below the 30 s read timeout it would have waited for; generous, since a loaded machine is slow.
        #expect(clock.now - started < .seconds(20), "the ack waited for the read timeout")
        #expect(await session.ack(try #require(next.first).tag))
    }

    @Test func aCancelledWaitReturnsAtOnce() async throws {
        let (session, queue) = try await sessionWithQueue("cancelled-wait")
        try await session.consume(queue: queue)
        let clock = ContinuousClock()
        let started = clock.now
        let waiting = Task { try await session.nextDeliveries(maximum: 10, wait: .seconds(30)) }
        try await Task.sleep(for: .milliseconds(200))
        waiting.cancel()
        #expect(try await waiting.value.isEmpty)
        // Far below the 30 s it would have waited for; generous, since a loaded machine is slow.
        #expect(clock.now - started < .seconds(20), "the wait ignored its cancellation")
        #expect(try await session.publish(messages(1, to: queue)) == [.confirmed], "the session still works")
    }

    /// `endDeliveryWaits` (a graceful-shutdown handler's call) ends a wait under way or about to
    /// begin, whichever comes first, and every later one, at once; the session keeps working.
    @Test func endingDeliveryWaitsEndsThisWaitAndEveryLaterOne() async throws {
        let (session, queue) = try await sessionWithQueue("ended-waits")
        try await session.consume(queue: queue)
        let clock = ContinuousClock()
        let started = clock.now
        let waiting = Task { try await session.nextDeliveries(maximum: 10, wait: .seconds(30), linger: .seconds(30)) }
        session.endDeliveryWaits()
        #expect(try await waiting.value.isEmpty)
        #expect(try await session.nextDeliveries(maximum: 10, wait: .seconds(30)).isEmpty)
        // Far below the 30 s each would have waited for; generous, since a loaded machine is slow.
        #expect(clock.now - started < .seconds(20), "a wait outlived endDeliveryWaits")
        #expect(try await session.publish(messages(1, to: queue)) == [.confirmed], "the session still works")
    }

    @Test func nackAndRejectRequeueOrDrop() async throws {
        let (session, queue) = try await sessionWithQueue("nack", prefetch: 1)
        _ = try await session.publish(messages(2, to: queue))
        try await session.consume(queue: queue)
        let first = try #require(try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first)
        #expect(first.properties.messageID == "m-0")
        #expect(await session.nack(first.tag, requeue: true))
        let again = try #require(try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first)
        #expect(again.properties.messageID == "m-0")
        #expect(again.redelivered)
        #expect(await session.reject(again.tag, requeue: false))
        let next = try #require(try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first)
        #expect(next.properties.messageID == "m-1")
        #expect(await session.nack(next.tag, requeue: false))
        #expect(try await session.nextDeliveries(maximum: 1, wait: .milliseconds(500)).isEmpty)
    }

    @Test func declaresQuorumQueuesWithLimitsAndDeadLettering() async throws {
        let session = try await TestBroker.session("quorum")
        let name = TestBroker.uniqueName("quorum")
        let deadLetters = "\(name).dlx"
        let topology = Topology(
            exchanges: [.init(name: deadLetters, type: "fanout", durable: false)],
            queues: [
                .quorum(name, deliveryLimit: 1, deadLetterExchange: deadLetters, maxLength: 100, overflow: "reject-publish"),
                .init(name: "\(name).dead", autoDelete: true),
            ],
            bindings: [.init(queue: "\(name).dead", exchange: deadLetters, routingKey: "")]
        )
        try await session.declare(topology)
        try await session.declare(topology)  // idempotent
        try await session.setPrefetch(10)
        try await session.enableConfirms()
        _ = try await session.publish(messages(1, to: name))
        try await session.consume(queue: name)
        // Requeued past the delivery limit → dead-lettered. `basic.reject`: RabbitMQ 4.3 no longer
        // counts a `basic.nack` toward the limit (3.10 counts both).
        for _ in 0..<2 {
            let delivery = try #require(try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first)
            await session.reject(delivery.tag, requeue: true)
        }
        try await session.consume(queue: "\(name).dead")
        let dead = try #require(try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first)
        #expect(dead.properties.messageID == "m-0")
        #expect(dead.exchange == deadLetters, "delivered from the dead-letter queue, not the queue itself")
        #expect(dead.routingKey == name)
        await session.ack(dead.tag)
        try await session.deleteQueue(name)
    }

    @Test func declaringAnInequivalentQueueFailsWithTheBrokersReason() async throws {
        let session = try await TestBroker.session("inequivalent")
        let name = TestBroker.uniqueName("inequivalent")
        try await session.declare(Topology(queues: [.init(name: name, autoDelete: true)]))
        await #expect {
            try await session.declare(Topology(queues: [.init(name: name, durable: true)]))
        } throws: { error in
            guard case AMQPError.channelClosedByBroker(_, let code, let text) = error else { return false }
            return code == 406 && text.contains("PRECONDITION_FAILED")
        }
    }

    /// The queue's type, as the broker lists it.
    private func queueType(_ name: String) async throws -> String? {
        let listing = try await TestBroker.brokerScript(["ctl", "-q", "list_queues", "--no-table-headers", "name", "type"])
        return listing.split(separator: "\n").map { $0.split(separator: "\t").map { $0.trimmingCharacters(in: .whitespaces) } }
            .first { $0.first == name }?.last
    }

    @Test func aQueueDeclaredAsAnEarlierVersionDidIsKeptAsItIs() async throws {
        let session = try await TestBroker.session("declared-earlier")
        let (kept, fresh) = (TestBroker.uniqueName("declared-earlier.kept"), TestBroker.uniqueName("declared-earlier.fresh"))
        TestResources.onExit("queues \(kept), \(fresh)") {
            for name in [kept, fresh] { try? await session.deleteQueue(name) }
        }
        let earlier: [String: FieldValue] = ["x-queue-type": "classic", "x-max-length": .int(10), "x-overflow": "drop-head"]
        try await session.declare(Topology(queues: [.init(name: kept, arguments: earlier)]))
        let now = { (name: String) in Topology.Queue.quorum(name, maxLength: 10, overflow: "drop-head") }
        // Without the earlier arguments, the broker refuses the new ones: what a worker of this
        // version met before it knew them.
        await #expect {
            try await session.declare(Topology(queues: [now(kept)]))
        } throws: { error in
            guard case AMQPError.channelClosedByBroker(_, let code, _) = error else { return false }
            return code == 406
        }
        try await session.declare(Topology(queues: [now(kept).declaredEarlier(as: earlier), now(fresh).declaredEarlier(as: earlier)]))
        #expect(try await queueType(kept) == "classic", "the existing queue is kept as it was")
        #expect(try await queueType(fresh) == "quorum", "a new queue gets the new arguments")
        // The channel the refused declaration closed was reopened: the session still works.
        try await session.enableConfirms()
        let outcomes = try await session.publish([OutgoingMessage(exchange: "", routingKey: kept, body: Array("m".utf8))],
                                                 timeout: .seconds(10))
        #expect(outcomes == [.confirmed])
    }
}

@Suite("AMQP connection errors", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct ConnectionErrorTests {
    private func connect(_ configuration: ConnectionConfiguration) async throws {
        let session = AMQPSession(configuration: configuration, logger: TestBroker.logger("errors"))
        TestResources.onExit("AMQP session errors") { await session.close() }
        try await session.connect()
        await session.close()
    }

    @Test func refusedConnection() async throws {
        var configuration = try TestBroker.configuration(name: "refused")
        configuration.port = 1  // nothing listens there
        await #expect {
            try await connect(configuration)
        } throws: { error in
            guard case AMQPError.connectionFailed(let endpoint, _) = error else { return false }
            return endpoint.hasSuffix(":1")
        }
    }

    @Test func wrongPassword() async throws {
        var configuration = try TestBroker.configuration(name: "password")
        configuration.password = "wrong"
        await #expect {
            try await connect(configuration)
        } throws: { error in
            guard case AMQPError.authenticationFailed(let user, _, _) = error else { return false }
            return user == configuration.user && !"\(error)".contains("wrong")
        }
    }

    @Test func missingVhost() async throws {
        var configuration = try TestBroker.configuration(name: "vhost")
        configuration.vhost = "no-such-vhost"
        await #expect {
            try await connect(configuration)
        } throws: { error in
            guard case AMQPError.vhostNotAccessible(let vhost, _) = error else { return false }
            return vhost == "no-such-vhost"
        }
    }
}
