import Foundation
import Logging
import Synchronization

/// One broker connection with one channel that survives connection loss.
///
/// The session remembers what was set up on it (topology, prefetch, confirm mode, consumers) and
/// replays it after reconnecting with backoff. Deliveries carry the connection generation they
/// arrived on; acknowledging one from an earlier generation is a no-op, because the broker already
/// requeued it when the old channel died (and its tag may now name another message).
///
/// The actor runs on its own thread (`ThreadExecutor`): every rabbitmq-c call blocks that thread,
/// never Swift's cooperative pool. Use one session for consuming and another for publishing, as
/// RabbitMQ recommends; one session can do both (the CLI's direct reply-to needs that).
public actor AMQPSession {
    public struct Consumer: Sendable, Hashable {
        public var queue: String
        public var consumerTag: String
        public var noAck: Bool
        public var exclusive: Bool
        public var arguments: [String: FieldValue]
    }

    private let executor: ThreadExecutor
    public nonisolated var unownedExecutor: UnownedSerialExecutor { executor.asUnownedSerialExecutor() }

    public nonisolated let configuration: ConnectionConfiguration
    public nonisolated let recovery: RecoveryPolicy
    private let logger: Logger

    private var connection: AMQPConnection?
    /// Bumped on every successful (re)connect; part of every delivery tag.
    public private(set) var generation: UInt64 = 0
    /// How often the session reconnected after losing its connection.
    public private(set) var reconnects = 0
    /// True while the broker has blocked publishing on this connection (resource alarm).
    public private(set) var isBlocked = false {
        didSet { impairments.store(impairmentBits, ordering: .relaxed) }
    }
    private var isRecoveringNow = false {
        didSet { impairments.store(impairmentBits, ordering: .relaxed) }
    }
    /// `isRecovering` and `isBlocked` for readers on any thread (health probes), without waiting
    /// for the session's thread, which may sit in a blocking broker call.
    private nonisolated let impairments = Atomic<UInt8>(0)
    private var impairmentBits: UInt8 { (isRecoveringNow ? 1 : 0) | (isBlocked ? 2 : 0) }
    /// True from losing the connection until it is re-established (readable from any thread).
    public nonisolated var isRecovering: Bool { impairments.load(ordering: .relaxed) & 1 != 0 }
    /// `isBlocked`, readable from any thread.
    public nonisolated var isBlockedNow: Bool { impairments.load(ordering: .relaxed) & 2 != 0 }
    private var isClosed = false

    // What to replay after a reconnect.
    private var topology = Topology()
    private var prefetch: UInt16?
    private var confirms = false
    private var consumers: [Consumer] = []

    /// Deliveries read while waiting for something else (confirms), served first.
    private var buffered: [Delivery] = []
    /// Publish sequence number of the next message on the current channel (confirm mode).
    private var nextPublishSequence: UInt64 = 1

    public init(configuration: ConnectionConfiguration, recovery: RecoveryPolicy = .init(), logger: Logger,
                name: String = "amqp") {
        self.executor = ThreadExecutor(name: name)
        self.configuration = configuration
        self.recovery = recovery
        var logger = logger
        logger[metadataKey: "amqp.session"] = .string(name)
        self.logger = logger
    }

    deinit {
        executor.shutdown()
    }

    // MARK: Set-up (remembered and replayed after reconnects)

    /// Connects now. Errors are thrown as they are, so a wrong URL or password fails fast.
    public func connect() throws(AMQPError) {
        try ensureOpen()
        if connection == nil { try reconnectOnce() }
    }

    public func declare(_ topology: Topology) throws(AMQPError) {
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.declare(topology) }
        self.topology.merge(topology)
    }

    public func setPrefetch(_ count: UInt16) throws(AMQPError) {
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.setPrefetch(count) }
        prefetch = count
    }

    public func enableConfirms() throws(AMQPError) {
        guard !confirms else { return }
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.enableConfirms() }
        confirms = true
        nextPublishSequence = 1
    }

    /// Starts a consumer; after a reconnect it is started again with the same tag.
    @discardableResult
    public func consume(queue: String, consumerTag: String? = nil, noAck: Bool = false, exclusive: Bool = false,
                        arguments: [String: FieldValue] = [:]) throws(AMQPError) -> String {
        let requested = consumerTag ?? "\(queue).\(UUID().uuidString.lowercased())"
        let tag = try withConnection { (connection: AMQPConnection) throws(AMQPError) in
            try connection.consume(queue: queue, consumerTag: requested, noAck: noAck, exclusive: exclusive, arguments: arguments)
        }
        consumers.append(Consumer(queue: queue, consumerTag: tag, noAck: noAck, exclusive: exclusive, arguments: arguments))
        return tag
    }

    /// Declares a queue once (not replayed), e.g. a server-named queue for a test. Returns its name.
    @discardableResult
    public func declareQueueOnce(_ queue: Topology.Queue) throws(AMQPError) -> String {
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.declare(queue) }
    }

    public func deleteQueue(_ name: String) throws(AMQPError) {
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.deleteQueue(name) }
    }

    public func deleteExchange(_ name: String) throws(AMQPError) {
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.deleteExchange(name) }
    }

    public func purgeQueue(_ name: String) throws(AMQPError) {
        try withConnection { (connection: AMQPConnection) throws(AMQPError) in try connection.purgeQueue(name) }
    }

    // MARK: Consuming

    /// Up to `maximum` deliveries: waits up to `wait` for the first, then up to `linger` for more.
    /// Returns an empty array when nothing came. A lost connection is recovered inside (with
    /// backoff); the broker redelivers whatever was unacknowledged.
    public func nextDeliveries(maximum: Int, wait: Duration, linger: Duration = .zero) async throws -> [Delivery] {
        try ensureOpen()
        var batch = takeBuffered(maximum: maximum)
        do {
            let clock = ContinuousClock()
            if batch.isEmpty {
                let deadline = clock.now + wait
                while batch.isEmpty, clock.now < deadline, !Task.isCancelled {
                    // Short slices, yielding in between, let other calls on this session (an ack
                    // from the task that publishes replies) through while we wait.
                    let slice = min(deadline - clock.now, .milliseconds(10))
                    if let delivery = try await nextDelivery(timeout: slice) {
                        batch.append(delivery)
                    } else {
                        await Task.yield()
                        batch += takeBuffered(maximum: maximum)
                    }
                }
            }
            guard !batch.isEmpty else { return batch }
            let lingerDeadline = clock.now + linger
            while batch.count < maximum {
                let remaining = lingerDeadline - clock.now
                let connection = try await usableConnection()
                guard remaining > .zero || connection.hasBufferedInput else { break }
                guard let delivery = try await nextDelivery(timeout: max(remaining, .zero)) else {
                    if remaining <= .zero { break } else { continue }
                }
                batch.append(delivery)
            }
        } catch let error as AMQPError where error.isRecoverable {
            // What we read on the dead channel will be redelivered; its tags are void now.
            try await recover(after: error)
            return []
        }
        return batch
    }

    /// Acknowledges up to and including `tag` (with `multiple`) or just `tag`. Returns false for a
    /// tag from an earlier connection (the broker requeued it already) or when the connection just
    /// failed (it will be requeued): in both cases nothing was acknowledged.
    @discardableResult
    public func ack(_ tag: DeliveryTag, multiple: Bool = false) -> Bool {
        settle(tag, "basic.ack") { (connection: AMQPConnection) throws(AMQPError) in try connection.ack(tag.value, multiple: multiple) }
    }

    @discardableResult
    public func nack(_ tag: DeliveryTag, multiple: Bool = false, requeue: Bool) -> Bool {
        settle(tag, "basic.nack") { (connection: AMQPConnection) throws(AMQPError) in try connection.nack(tag.value, multiple: multiple, requeue: requeue) }
    }

    @discardableResult
    public func reject(_ tag: DeliveryTag, requeue: Bool) -> Bool {
        settle(tag, "basic.reject") { (connection: AMQPConnection) throws(AMQPError) in try connection.reject(tag.value, requeue: requeue) }
    }

    private func settle(_ tag: DeliveryTag, _ operation: String, _ body: (AMQPConnection) throws(AMQPError) -> Void) -> Bool {
        guard tag.connectionGeneration == generation, let connection, connection.isUsable else {
            logger.debug("not settling a delivery from a closed channel", metadata: [
                "amqp.operation": "\(operation)", "amqp.delivery_generation": "\(tag.connectionGeneration)",
            ])
            return false
        }
        do {
            try body(connection)
            return true
        } catch {
            logger.warning("settling failed; the broker will redeliver", metadata: ["amqp.operation": "\(operation)", "error": "\(error)"])
            return false
        }
    }

    // MARK: Publishing

    /// Publishes `messages` in order and waits once for the broker's verdict on all of them:
    /// confirmed, returned (mandatory and unroutable) or nacked. Needs `enableConfirms()`.
    /// If the connection drops meanwhile, the session reconnects and publishes again whatever
    /// was not settled (at-least-once). Throws `AMQPError.timeout` if confirms take longer than
    /// `timeout` (for instance while the broker blocks publishers on a resource alarm).
    public func publish(_ messages: [OutgoingMessage], timeout: Duration = .seconds(30)) async throws -> [PublishOutcome] {
        try ensureOpen()
        precondition(confirms, "enableConfirms() before publish(_:)")
        var outcomes = [PublishOutcome?](repeating: nil, count: messages.count)
        var attempt = 0
        while true {
            let pending = outcomes.indices.filter { outcomes[$0] == nil }
            if pending.isEmpty { return outcomes.map { $0! } }
            do {
                try await publishAndAwaitConfirms(messages, indices: pending, into: &outcomes, timeout: timeout)
            } catch let error as AMQPError where error.isRecoverable && error != .timeout(operation: Self.confirmWait) {
                attempt += 1
                if let limit = recovery.maximumAttempts, attempt > limit { throw error }
                try await recover(after: error)
            }
        }
    }

    private static let confirmWait = "waiting for publisher confirms"

    private func publishAndAwaitConfirms(_ messages: [OutgoingMessage], indices: [Int], into outcomes: inout [PublishOutcome?],
                                         timeout: Duration) async throws {
        let connection = try await usableConnection()
        var unsettled: [UInt64: Int] = [:]  // publish sequence number → message index
        var returned: [UInt64: PublishOutcome] = [:]
        unsettled.reserveCapacity(indices.count)
        for index in indices {
            try connection.publish(messages[index])
            unsettled[nextPublishSequence] = index
            nextPublishSequence += 1
        }
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        while !unsettled.isEmpty {
            let remaining = deadline - clock.now
            guard remaining > .zero else { throw AMQPError.timeout(operation: Self.confirmWait) }
            guard let event = try connection.nextEvent(timeout: min(remaining, .seconds(1))) else { continue }
            switch event {
            case .ack(let tag, let multiple), .nack(let tag, let multiple):
                let isAck = if case .ack = event { true } else { false }
                let settled = multiple ? unsettled.keys.filter { $0 <= tag } : (unsettled[tag] == nil ? [] : [tag])
                for sequence in settled {
                    outcomes[unsettled.removeValue(forKey: sequence)!] = isAck ? (returned[sequence] ?? .confirmed) : .nacked
                }
            case .returned(let code, let text, let exchange, let routingKey, let properties):
                // A return precedes its ack; match it to the oldest unsettled message it describes.
                let match = unsettled.filter { sequence, index in
                    returned[sequence] == nil && messages[index].exchange == exchange
                        && messages[index].routingKey == routingKey && messages[index].properties.messageID == properties.messageID
                }.keys.min()
                if let match { returned[match] = .returned(replyCode: code, replyText: text) }
            default:
                try handleAsynchronous(event)
            }
        }
    }

    // MARK: Closing

    /// Closes the connection politely. Later calls throw `AMQPError.sessionClosed`.
    public func close() {
        isClosed = true
        connection?.close()
        connection = nil
        buffered.removeAll()
    }

    // MARK: Internals

    private func ensureOpen() throws(AMQPError) {
        if isClosed { throw .sessionClosed }
    }

    private func withConnection<T>(_ body: (AMQPConnection) throws(AMQPError) -> T) throws(AMQPError) -> T {
        try ensureOpen()
        if connection == nil { try reconnectOnce() }
        return try body(connection!)
    }

    /// The current connection, recovering first if it is gone or broken.
    private func usableConnection() async throws -> AMQPConnection {
        try ensureOpen()
        if let connection, connection.isUsable { return connection }
        try await recover(after: .connectionLost(operation: "using the connection", reason: "connection is closed"))
        return connection!
    }

    private func nextDelivery(timeout: Duration) async throws -> Delivery? {
        let connection = try await usableConnection()
        let clock = ContinuousClock()
        let deadline = clock.now + timeout
        repeat {
            guard let event = try connection.nextEvent(timeout: max(deadline - clock.now, .zero)) else { return nil }
            if case .delivery = event { return delivery(from: event) }
            try handleAsynchronous(event)
        } while clock.now < deadline
        return nil
    }

    private func delivery(from event: InboundEvent) -> Delivery? {
        guard case .delivery(let tag, let consumerTag, let redelivered, let exchange, let routingKey, let body, let properties) = event
        else { return nil }
        return Delivery(tag: DeliveryTag(connectionGeneration: generation, value: tag), consumerTag: consumerTag,
                        redelivered: redelivered, exchange: exchange, routingKey: routingKey, body: body, properties: properties)
    }

    /// Events that are not what the caller waits for.
    private func handleAsynchronous(_ event: InboundEvent) throws(AMQPError) {
        switch event {
        case .delivery:
            if let delivery = delivery(from: event) { buffered.append(delivery) }
        case .blocked(let reason):
            isBlocked = true
            logger.warning("broker blocked publishing on this connection", metadata: ["amqp.reason": "\(reason)"])
        case .unblocked:
            isBlocked = false
            logger.notice("broker unblocked publishing on this connection")
        case .consumerCancelled(let consumerTag):
            // Queue deleted or its leader moved: reconnecting re-declares and consumes again.
            connection?.close()
            throw .consumerCancelledByBroker(consumerTag: consumerTag)
        case .ack, .nack, .returned:
            // Late confirms of a batch that timed out: nobody waits for them any more.
            logger.debug("ignoring a late publisher confirm or return")
        }
    }

    private func takeBuffered(maximum: Int) -> [Delivery] {
        let count = min(maximum, buffered.count)
        guard count > 0 else { return [] }
        defer { buffered.removeFirst(count) }
        return Array(buffered.prefix(count))
    }

    /// Reconnects with exponential backoff and jitter until it works, the policy's attempts run
    /// out, the session is closed, or the task is cancelled.
    private func recover(after error: AMQPError) async throws {
        isRecoveringNow = true
        defer { isRecoveringNow = false }
        connection = nil
        buffered.removeAll()
        logger.warning("AMQP connection lost; reconnecting", metadata: ["error": "\(error)"])
        var attempt = 0
        while true {
            attempt += 1
            try await Task.sleep(for: recovery.delay(beforeAttempt: attempt))
            try ensureOpen()
            do {
                try reconnectOnce()
                reconnects += 1
                logger.notice("AMQP connection recovered", metadata: ["amqp.attempts": "\(attempt)", "amqp.generation": "\(generation)"])
                return
            } catch {
                if let limit = recovery.maximumAttempts, attempt >= limit { throw error }
                logger.warning("AMQP reconnect failed", metadata: ["amqp.attempt": "\(attempt)", "error": "\(error)"])
            }
        }
    }

    /// Opens a connection and replays the remembered set-up on it.
    private func reconnectOnce() throws(AMQPError) {
        connection = nil
        let fresh = try AMQPConnection(configuration: configuration)
        try fresh.declare(topology)
        if let prefetch { try fresh.setPrefetch(prefetch) }
        if confirms { try fresh.enableConfirms() }
        for consumer in consumers {
            _ = try fresh.consume(queue: consumer.queue, consumerTag: consumer.consumerTag, noAck: consumer.noAck,
                                  exclusive: consumer.exclusive, arguments: consumer.arguments)
        }
        connection = fresh
        generation += 1
        nextPublishSequence = 1
        isBlocked = false
    }
}
