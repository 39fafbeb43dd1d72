import AMQP
import CustomerStore
import Dispatch
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Consumes create-customer commands and answers each with a reply.
///
/// Per batch, in this order: one SQLite transaction for the whole batch → replies published and
/// confirmed by the broker → commands acknowledged with `multiple`. A command is never
/// acknowledged before its reply is confirmed. The next batch's transaction overlaps with the
/// previous batch's publishing (at most one batch in each stage), and acks stay in order because
/// the publishing stage runs one batch at a time.
///
/// Graceful shutdown (SIGTERM/SIGINT through the ServiceGroup): stop taking commands, finish the
/// batches in hand, close both connections; unread prefetched commands go back to the queue.
public final class CommandWorker: Service {
    public let configuration: WorkerConfiguration
    private let store: CustomerStore
    private let consumer: AMQPSession
    private let publisher: AMQPSession
    private let logger: Logger
    private let metrics = WorkerMetrics()
    private let attached = Atomic<Bool>(false)
    /// Monotonic time of the consume loop's last turn (it turns at least every 100 ms when idle).
    private let lastTurn = Atomic<UInt64>(0)
    /// Deliveries taken and not yet acknowledged or returned.
    private let unacked = Atomic<Int>(0)
    /// True while the worker holds a batch it cannot commit because the store keeps failing.
    private let paused = Atomic<Bool>(false)
    /// How long the loop may go without turning before liveness fails, in nanoseconds
    /// (`WorkerConfiguration.livenessWindow`).
    private let livenessWindow: UInt64

    public init(configuration: WorkerConfiguration, store: CustomerStore, logger: Logger) throws(AMQPError) {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        let (seconds, attoseconds) = configuration.livenessWindow.components
        livenessWindow = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        var amqp = try configuration.amqpConfiguration
        let host = ProcessInfo.processInfo.hostName
        let pid = ProcessInfo.processInfo.processIdentifier
        amqp.connectionName = "customer-worker \(host) \(pid) consumer"
        consumer = AMQPSession(configuration: amqp, recovery: configuration.reconnect, logger: logger, name: "consumer")
        amqp.connectionName = "customer-worker \(host) \(pid) publisher"
        publisher = AMQPSession(configuration: amqp, recovery: configuration.reconnect, logger: logger, name: "publisher")
    }

    /// True while the consumer is attached to the command queue.
    public var isConsuming: Bool { attached.load(ordering: .relaxed) }

    /// True while the store keeps failing and the worker holds its batch instead of taking more.
    public var isPaused: Bool { paused.load(ordering: .relaxed) }

    /// Readiness: attached to the queue, and neither reconnecting, blocked by the broker, nor
    /// paused by a failing store. Reads only atomics, so a probe never waits for the worker.
    public var isReady: Bool {
        isConsuming && !isPaused && !consumer.isRecovering && !publisher.isRecovering && !publisher.isBlockedNow
    }

    /// Liveness: false when the consume loop has not turned for longer than the longest
    /// legitimate wait the settings allow. Waiting for the broker to come back counts as alive:
    /// a restart would not bring it back sooner.
    public var isLive: Bool {
        if consumer.isRecovering || publisher.isRecovering { return true }
        let last = lastTurn.load(ordering: .relaxed)
        return last == 0 || DispatchTime.now().uptimeNanoseconds - last < livenessWindow
    }

    public func run() async throws {
        try await start()
        defer { attached.store(false, ordering: .relaxed) }
        do {
            try await consumeUntilShutdown()
        } catch {
            await closeSessions()
            throw error
        }
        await closeSessions()
        logger.info("worker stopped")
    }

    private func start() async throws {
        try await consumer.declare(configuration.topology)
        try await consumer.setPrefetch(UInt16(configuration.prefetch))
        try await publisher.enableConfirms()
        try await consumer.consume(queue: configuration.names.commandQueue)
        attached.store(true, ordering: .relaxed)
        logger.info("worker consuming", metadata: [
            "amqp.queue": "\(configuration.names.commandQueue)", "prefetch": "\(configuration.prefetch)",
        ])
    }

    private func closeSessions() async {
        await consumer.close()
        await publisher.close()
    }

    private func consumeUntilShutdown() async throws {
        try await withThrowingTaskGroup(of: Void.self) { publishing in
            var batchInFlight = false
            var generation = await consumer.generation
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                lastTurn.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
                let deliveries = try await consumer.nextDeliveries(
                    maximum: configuration.batchLimit, wait: .milliseconds(100), linger: configuration.batchLinger)
                await noteReconnects(&generation)
                guard !deliveries.isEmpty else { continue }
                let received = ContinuousClock.now
                metrics.received.increment(by: deliveries.count)
                metrics.batchSize.record(deliveries.count)
                trackUnacked(deliveries.count)
                guard let replies = await persist(deliveries) else {
                    // Settle the batch in flight first: returning this one with `multiple` must
                    // not take the previous batch's deliveries along while their replies publish.
                    if batchInFlight { try await publishing.next() }
                    batchInFlight = false
                    await giveBack(deliveries)
                    continue
                }
                if batchInFlight { try await publishing.next() }
                publishing.addTask { await self.reply(to: deliveries, with: replies, received: received) }
                batchInFlight = true
            }
            try await publishing.waitForAll()
        }
    }

    private func noteReconnects(_ generation: inout UInt64) async {
        let current = await consumer.generation
        if current != generation {
            metrics.reconnects.increment(by: Int(current - generation))
            generation = current
        }
    }

    // MARK: Stage 1: one transaction for the batch

    /// The replies of the committed transaction, or nil when the database kept failing.
    private func persist(_ deliveries: [Delivery]) async -> [ReplyRecord]? {
        let commands = deliveries.map {
            IncomingCommand(apiKey: $0.properties.headers["x-api-key"]?.stringValue, contentType: $0.properties.contentType, body: $0.body)
        }
        return await withTransientRetries("database transaction", batchSize: deliveries.count) {
            let start = ContinuousClock.now
            let replies = try await self.store.handle(commands, now: Date())
            self.metrics.transaction.recordSince(start)
            return replies
        }
    }

    // MARK: Stage 2: publish, await confirms, ack

    private func reply(to deliveries: [Delivery], with replies: [ReplyRecord], received: ContinuousClock.Instant) async {
        metrics.record(replies)
        let timestamp = UInt64(Date().timeIntervalSince1970)
        var messages: [OutgoingMessage] = []
        messages.reserveCapacity(deliveries.count * 2)
        for (delivery, reply) in zip(deliveries, replies) {
            messages += configuration.replyMessages(for: delivery.properties, reply: reply, timestamp: timestamp)
        }
        let replyMessages = messages
        let confirmed: Void? = await withTransientRetries("publishing replies", batchSize: deliveries.count) {
            try await self.publishConfirmed(replyMessages)
        }
        guard confirmed != nil, let last = deliveries.last else {
            await giveBack(deliveries)
            return
        }
        if await consumer.ack(last.tag, multiple: true) {
            let elapsed = ContinuousClock.now - received
            for _ in deliveries { metrics.handling.record(duration: elapsed) }
        }
        trackUnacked(-deliveries.count)
        logBatch(deliveries, replies)
    }

    /// Publishes and waits for the broker's confirms; throws if any reply was nacked.
    private func publishConfirmed(_ messages: [OutgoingMessage]) async throws {
        let start = ContinuousClock.now
        let outcomes = try await publisher.publish(messages, timeout: configuration.confirmTimeout)
        metrics.confirm.recordSince(start)
        var nacked = 0
        for (message, outcome) in zip(messages, outcomes) {
            switch outcome {
            case .confirmed:
                continue
            case .nacked:
                nacked += 1
            case .returned(let code, let text) where message.exchange == configuration.names.eventsExchange:
                logger.warning("reply not routed: nothing is bound to the events exchange", metadata: [
                    "reply.routing_key": "\(message.routingKey)", "amqp.reply_code": "\(code)", "amqp.reply_text": "\(text)",
                ])
            case .returned:
                // The requester's reply-to queue is gone (it stopped waiting): the event copy stands.
                logger.debug("reply-to not routed", metadata: ["command.message_id": "\(message.properties.correlationID ?? "")"])
            }
        }
        if nacked > 0 { throw ReplyNotConfirmed(nacked: nacked) }
    }

    struct ReplyNotConfirmed: Error, CustomStringConvertible {
        let nacked: Int
        var description: String { "the broker refused (nacked) \(nacked) replies" }
    }

    // MARK: Failure handling

    /// Retries `body` with backoff; nil when every attempt failed (all logged and counted).
    private func withTransientRetries<T: Sendable>(_ operation: String, batchSize: Int,
                                                   _ body: @Sendable () async throws -> T) async -> T? {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await body()
            } catch {
                metrics.transientFailures.increment()
                let exhausted = attempt >= configuration.transientAttempts || Task.isCancelled
                logger.log(level: exhausted ? .error : .warning, "transient failure", metadata: [
                    "operation": "\(operation)", "attempt": "\(attempt)", "batch.size": "\(batchSize)", "error": "\(error)",
                ])
                if exhausted { return nil }
                try? await Task.sleep(for: configuration.transientBackoff.delay(beforeAttempt: attempt))
            }
        }
    }

    /// Returns a batch to the queue after its attempts ran out, then pauses so a persistent fault
    /// does not become a hot requeue loop. Requeues count toward the delivery limit, after which
    /// the queue dead-letters the command.
    private func giveBack(_ deliveries: [Delivery]) async {
        guard let last = deliveries.last else { return }
        await consumer.nack(last.tag, multiple: true, requeue: true)
        trackUnacked(-deliveries.count)
        logger.error("batch returned to the queue", metadata: ["batch.size": "\(deliveries.count)"])
        try? await Task.sleep(for: configuration.transientBackoff.maximumDelay)
    }

    private func trackUnacked(_ change: Int) {
        let now = unacked.add(change, ordering: .relaxed).newValue
        metrics.unacked.record(now)
    }

    private func logBatch(_ deliveries: [Delivery], _ replies: [ReplyRecord]) {
        guard logger.logLevel <= .debug else { return }
        for (delivery, reply) in zip(deliveries, replies) {
            logger.debug("command handled", metadata: [
                "command.message_id": "\(delivery.properties.messageID ?? "")",
                "reply.type": "\(reply.type.rawValue)",
                "reply.code": "\(reply.errorCode ?? "none")",
                "reply.replayed": "\(reply.replayed)",
                "delivery.redelivered": "\(delivery.redelivered)",
            ])
        }
    }
}
