import Foundation
import Logging
import Synchronization

/// One broker connection with one channel that survives connection loss.
///
/// The connection is an event loop on a thread of its own (`EventLoop` + `SessionCore`): the
/// thread owns the rabbitmq-c connection, waits in `poll()` on its socket and on a wake-up pipe,
/// dispatches what the broker sends the moment it arrives (deliveries, confirms, returns,
/// closes, cancels, blocked/unblocked), sends heartbeats itself, and runs what callers submit
/// (acks, publishes, declarations, close) at once. No caller waits for another caller's read,
/// and no C call ever runs on Swift's cooperative pool.
///
/// The session remembers what was set up on it (topology, prefetch, confirm mode, consumers) and
/// replays it after reconnecting with backoff, walking through its broker nodes. Deliveries carry
/// the connection generation they arrived on; acknowledging one from an earlier generation is a
/// no-op, because the broker already requeued it when the old channel died (and its tag may now
/// name another message).
///
/// Use one session for consuming and another for publishing, as RabbitMQ recommends; one session
/// can do both (the CLI's direct reply-to needs that).
public final class AMQPSession: Sendable {
    public struct Consumer: Sendable, Hashable {
        public var queue: String
        public var consumerTag: String
        public var noAck: Bool
        public var exclusive: Bool
        public var arguments: [String: FieldValue]
    }

    /// What the session looks like from outside, updated by its loop at every transition.
    public struct Status: Sendable, Equatable {
        public var state: ConnectionStateMachine.State = .idle
        public var generation: UInt64 = 0
        public var reconnects = 0
        /// The node in use (host:port); nil while not connected.
        public var node: String?

        public var isBlocked: Bool { if case .blocked = state { true } else { false } }
        /// Open and not blocked: publishing goes through.
        public var isUsable: Bool { if case .open = state { true } else { false } }
    }

    /// The first node (the only one unless a list was given).
    public let configuration: ConnectionConfiguration
    /// Every node, in the order given.
    public let nodes: [ConnectionConfiguration]
    public let recovery: RecoveryPolicy
    private let loop: EventLoop
    private let logger: Logger
    private let published: StatusBox
    /// Identifies waiting calls, so a cancelled task can withdraw its call from the loop.
    private let tokens = Atomic<UInt64>(1)

    public convenience init(configuration: ConnectionConfiguration, recovery: RecoveryPolicy = .init(), logger: Logger,
                            name: String = "amqp") {
        self.init(nodes: [configuration], recovery: recovery, logger: logger, name: name)
    }

    /// In which order a session tries its nodes: shuffled once (so replicas spread over a
    /// cluster), or as given (when the caller shuffled once for several sessions).
    public enum NodeOrder: Sendable {
        case shuffled, asGiven
    }

    /// A session over several broker nodes (a cluster): it connects to one at a time, trying them
    /// in `order`, then round robin, moving on to the next node when it loses one.
    public init(nodes: [ConnectionConfiguration], order: NodeOrder = .shuffled, recovery: RecoveryPolicy = .init(),
                logger: Logger, name: String = "amqp") {
        precondition(!nodes.isEmpty, "a session needs at least one broker node")
        self.configuration = nodes[0]
        self.nodes = nodes
        self.recovery = recovery
        var logger = logger
        logger[metadataKey: "amqp.session"] = .string(name)
        self.logger = logger
        let status = StatusBox()
        self.published = status
        let order = order == .shuffled ? nodes.shuffled() : nodes
        loop = EventLoop(name: "amqp \(name)") { [logger] in
            SessionCore(nodes: order, recovery: recovery, logger: logger) { snapshot in status.value.withLock { $0 = snapshot } }
        }
    }

    deinit {
        loop.submit { core in core.close() }
    }

    // MARK: State

    /// The current state, generation, reconnect count and node, without waiting.
    public var status: Status { published.value.withLock { $0 } }

    /// Bumped on every successful (re)connect; part of every delivery tag.
    public var generation: UInt64 { get async { status.generation } }
    /// How often the session reconnected after losing its connection.
    public var reconnects: Int { get async { status.reconnects } }
    /// True while the broker has blocked publishing on this connection (resource alarm).
    public var isBlocked: Bool { get async { status.isBlocked } }
    /// True from losing the connection until it is re-established (for health probes, without waiting).
    public var isRecovering: Bool {
        switch status.state {
        case .connecting, .recovering: true
        default: false
        }
    }

    // MARK: Set-up (remembered and replayed after reconnects)

    /// Connects now. Errors are thrown as they are, so a wrong URL or password fails fast.
    public func connect() async throws(AMQPError) {
        try await call { core, promise in core.withConnection(promise) { _ throws(AMQPError) in () } }
    }

    /// How often a declaration the broker refused for now (`AMQPError.isTransientDeclarationFailure`)
    /// is tried in all, `recovery`'s delays apart; each try can take the broker's own timeout (5 s
    /// for a quorum queue's leader election).
    public static let declarationAttempts = 5

    /// Declares `topology` now and again after every reconnect. A declaration the broker refused
    /// for now (a quorum queue whose leader was not elected in time on a loaded node: the broker
    /// removed what it had started and closed the connection) is tried again on a new connection,
    /// up to `declarationAttempts` times; any other refusal is thrown at once.
    public func declare(_ topology: Topology) async throws(AMQPError) {
        var attempt = 1
        while true {
            do {
                return try await declareOnce(topology)
            } catch let error where error.isTransientDeclarationFailure && attempt < Self.declarationAttempts {
                let delay = recovery.delay(beforeAttempt: attempt)
                logger.warning("the broker could not declare the topology this time; declaring again", metadata: [
                    "amqp.error": "\(error)", "attempt": "\(attempt)", "delay": "\(delay)",
                ])
                do { try await Task.sleep(for: delay) } catch { throw .cancelled(operation: "declare") }
                attempt += 1
            }
        }
    }

    private func declareOnce(_ topology: Topology) async throws(AMQPError) {
        try await call { core, promise in
            core.withConnection(promise, againWhenCutOff: true) { connection throws(AMQPError) in
                try connection.declare(topology)
                core.topology.merge(topology)
                core.noteQueuesKeptAsDeclaredEarlier(connection)
            }
        }
    }

    public func setPrefetch(_ count: UInt16) async throws(AMQPError) {
        try await call { core, promise in
            core.withConnection(promise, againWhenCutOff: true) { connection throws(AMQPError) in
                try connection.setPrefetch(count)
                core.prefetch = count
            }
        }
    }

    public func enableConfirms() async throws(AMQPError) {
        try await call { core, promise in
            core.withConnection(promise, againWhenCutOff: true) { connection throws(AMQPError) in
                guard !core.confirms else { return }
                try connection.enableConfirms()
                core.confirms = true
                core.tracker = ConfirmTracker()
            }
        }
    }

    /// Starts a consumer; after a reconnect it is started again with the same tag. Like every
    /// set-up call, it waits through a connection lost under it (no answer within the RPC timeout)
    /// and is done on the next connection.
    @discardableResult
    public func consume(queue: String, consumerTag: String? = nil, noAck: Bool = false, exclusive: Bool = false,
                        arguments: [String: FieldValue] = [:]) async throws(AMQPError) -> String {
        let requested = consumerTag ?? "\(queue).\(UUID().uuidString.lowercased())"
        return try await call { core, promise in
            core.withConnection(promise, againWhenCutOff: true) { connection throws(AMQPError) in
                let tag = try connection.consume(queue: queue, consumerTag: requested, noAck: noAck, exclusive: exclusive,
                                                 arguments: arguments)
                core.consumers.append(Consumer(queue: queue, consumerTag: tag, noAck: noAck, exclusive: exclusive, arguments: arguments))
                return tag
            }
        }
    }

    /// Stops every consumer of this session (`basic.cancel`; none is started again after a
    /// reconnect until `consume` is called again) and returns the deliveries received and not
    /// handed out by `nextDeliveries` yet. They stay unacknowledged: the caller settles them.
    public func stopConsuming() async throws(AMQPError) -> [Delivery] {
        try await call { core, promise in core.stopConsuming(promise) }
    }

    /// Declares a queue once (not replayed), e.g. a server-named queue for a test. Returns its name.
    @discardableResult
    public func declareQueueOnce(_ queue: Topology.Queue) async throws(AMQPError) -> String {
        try await call { core, promise in core.withConnection(promise) { connection throws(AMQPError) in try connection.declare(queue) } }
    }

    public func deleteQueue(_ name: String) async throws(AMQPError) {
        try await call { core, promise in core.withConnection(promise) { connection throws(AMQPError) in try connection.deleteQueue(name) } }
    }

    public func deleteExchange(_ name: String) async throws(AMQPError) {
        try await call { core, promise in core.withConnection(promise) { connection throws(AMQPError) in try connection.deleteExchange(name) } }
    }

    /// Returns how many messages the purge removed.
    @discardableResult
    public func purgeQueue(_ name: String) async throws(AMQPError) -> UInt32 {
        try await call { core, promise in core.withConnection(promise) { connection throws(AMQPError) in try connection.purgeQueue(name) } }
    }

    /// The queue's ready messages (delivered, unacknowledged ones not included).
    public func messageCount(queue name: String) async throws(AMQPError) -> UInt32 {
        try await call { core, promise in core.withConnection(promise) { connection throws(AMQPError) in try connection.messageCount(queue: name) } }
    }

    // MARK: Consuming

    /// Up to `maximum` deliveries: waits up to `wait` for the first, then up to `linger` for more.
    /// Returns an empty array when nothing came. A lost connection is recovered by the loop (with
    /// backoff); the broker redelivers whatever was unacknowledged. Acks and publishes from other
    /// tasks go out while this waits. A cancelled task gets what arrived so far.
    public func nextDeliveries(maximum: Int, wait: Duration, linger: Duration = .zero) async throws(AMQPError) -> [Delivery] {
        precondition(maximum > 0, "maximum must be positive")
        let deadline = ContinuousClock.now + wait
        let token = tokens.add(1, ordering: .relaxed).oldValue
        return try await withTaskCancellationHandler {
            await result { core, promise in
                core.awaitDeliveries(DeliveryWaiter(token: token, maximum: maximum, deadline: deadline, linger: linger, promise: promise))
            }
        } onCancel: {
            loop.submit { core in core.cancel(token) }
        }.get()
    }

    /// Ends every wait for deliveries, now and from now on: each answers at once with what arrived
    /// so far (none is lost: what is not handed out stays unacknowledged until the session
    /// closes). For a consumer stopping for good, e.g. from a graceful-shutdown handler, which
    /// cannot cancel the waiting task itself; safe from any thread, it waits for nothing.
    public func endDeliveryWaits() {
        loop.submit { core in core.endWaits() }
    }

    /// Acknowledges up to and including `tag` (with `multiple`) or just `tag`. Returns false for a
    /// tag from an earlier connection (the broker requeued it already) or when the connection just
    /// failed (it will be requeued): in both cases nothing was acknowledged.
    @discardableResult
    public func ack(_ tag: DeliveryTag, multiple: Bool = false) async -> Bool {
        await settle { core, promise in
            core.settle(tag, multiple: multiple, "basic.ack", promise) { connection throws(AMQPError) in
                try connection.ack(tag.value, multiple: multiple)
            }
        }
    }

    /// Acknowledges exactly these deliveries, whatever order they were handed out in: with
    /// `multiple` where that covers no other unsettled delivery, else one by one. Returns false
    /// when any was from an earlier connection or the connection just failed (as `ack`).
    @discardableResult
    public func ack(_ tags: [DeliveryTag]) async -> Bool {
        await settle { core, promise in core.acknowledge(tags, promise) }
    }

    @discardableResult
    public func nack(_ tag: DeliveryTag, multiple: Bool = false, requeue: Bool) async -> Bool {
        await settle { core, promise in
            core.settle(tag, multiple: multiple, "basic.nack", promise) { connection throws(AMQPError) in
                try connection.nack(tag.value, multiple: multiple, requeue: requeue)
            }
        }
    }

    @discardableResult
    public func reject(_ tag: DeliveryTag, requeue: Bool) async -> Bool {
        await settle { core, promise in
            core.settle(tag, multiple: false, "basic.reject", promise) { connection throws(AMQPError) in
                try connection.reject(tag.value, requeue: requeue)
            }
        }
    }

    private func settle(_ body: @escaping @Sendable (SessionCore, Promise<Bool>) -> Void) async -> Bool {
        (try? await call(body)) ?? false
    }

    // MARK: Publishing

    /// Publishes `messages` in order and waits for the broker's verdict on each of them:
    /// confirmed, returned (mandatory and unroutable) or nacked. Needs `enableConfirms()`.
    /// If the connection drops meanwhile, the session reconnects and publishes again whatever
    /// was not settled (at-least-once); a channel error (403, 404, 405, 406) is retried on a fresh channel,
    /// after the topology was declared again, at most `recovery.channelErrorAttempts` times.
    /// While the broker blocks the connection, nothing is written and the publish waits.
    /// Throws `AMQPError.timeout` if the verdicts take longer than `timeout` in all, and
    /// `AMQPError.cancelled` when the calling task is cancelled first.
    public func publish(_ messages: [OutgoingMessage], timeout: Duration = .seconds(30)) async throws(AMQPError) -> [PublishOutcome] {
        guard !messages.isEmpty else { return [] }
        let deadline = ContinuousClock.now + timeout
        let token = tokens.add(1, ordering: .relaxed).oldValue
        return try await withTaskCancellationHandler {
            await result { core, promise in
                core.publish(PublishRequest(token: token, messages: messages, deadline: deadline, promise: promise))
            }
        } onCancel: {
            loop.submit { core in core.cancel(token) }
        }.get()
    }

    // MARK: Closing

    /// Closes the connection politely. Later calls throw `AMQPError.sessionClosed`.
    public func close() async {
        _ = try? await call { core, promise in
            core.close()
            promise.succeed(())
        }
    }

    // MARK: Internals

    /// Runs `body` on the loop's thread and waits for the promise it is handed.
    private func call<T: Sendable>(_ body: @escaping @Sendable (SessionCore, Promise<T>) -> Void) async throws(AMQPError) -> T {
        try await result(body).get()
    }

    private func result<T: Sendable>(_ body: @escaping @Sendable (SessionCore, Promise<T>) -> Void) async -> Result<T, AMQPError> {
        await withCheckedContinuation { continuation in
            let promise = Promise(continuation)
            if !loop.submit({ core in body(core, promise) }) { promise.fail(.sessionClosed) }
        }
    }
}

/// The status the loop publishes for readers on other threads.
final class StatusBox: Sendable {
    let value = Mutex(AMQPSession.Status())
}

/// The answer to one caller, given exactly once by the loop.
struct Promise<T: Sendable>: Sendable {
    private let continuation: CheckedContinuation<Result<T, AMQPError>, Never>

    init(_ continuation: CheckedContinuation<Result<T, AMQPError>, Never>) {
        self.continuation = continuation
    }

    func succeed(_ value: T) { continuation.resume(returning: .success(value)) }
    func fail(_ error: AMQPError) { continuation.resume(returning: .failure(error)) }
    func complete(_ result: Result<T, AMQPError>) { continuation.resume(returning: result) }
}

/// A caller of `nextDeliveries` waiting on the loop.
struct DeliveryWaiter {
    let token: UInt64
    let maximum: Int
    let deadline: ContinuousClock.Instant
    let linger: Duration
    let promise: Promise<[Delivery]>
    /// Set when the first delivery is there: hand over at this time at the latest.
    var lingerDeadline: ContinuousClock.Instant?
}

/// One `publish` call on the loop.
final class PublishRequest {
    let token: UInt64
    let messages: [OutgoingMessage]
    let deadline: ContinuousClock.Instant
    let promise: Promise<[PublishOutcome]>
    var outcomes: [PublishOutcome?]
    var unsettled: Int
    /// Indices to write (all at first; the unsettled ones again after a lost channel).
    var unwritten: [Int]
    /// Channels lost with messages of this request in flight, and of those, closed with 404/403.
    var losses = 0
    var channelErrors = 0

    init(token: UInt64, messages: [OutgoingMessage], deadline: ContinuousClock.Instant, promise: Promise<[PublishOutcome]>) {
        self.token = token
        self.messages = messages
        self.deadline = deadline
        self.promise = promise
        self.outcomes = Array(repeating: nil, count: messages.count)
        self.unsettled = messages.count
        self.unwritten = Array(messages.indices)
    }
}
