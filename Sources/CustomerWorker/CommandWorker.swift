import AMQP
import CreateCustomer
import Dispatch
import Foundation
import Logging
import Metrics
import Observability
import ServiceLifecycle
import Synchronization
import Tracing
import WorkerTracing

/// Consumes create-customer commands and answers each with a reply.
///
/// Per batch, in this order: one database transaction for the whole batch → replies published and
/// confirmed by the broker → commands acknowledged with `multiple`. A command is never
/// acknowledged before its reply is confirmed. The next batch's transaction overlaps with the
/// previous batch's publishing (at most one batch in each stage), and acks stay in order because
/// the publishing stage runs one batch at a time.
///
/// One command or one outage never hurts the others:
/// - Only the copy to the events exchange gates the ack; a copy to `reply_to` (only to allowed
///   names, see `ReplyToPolicy`) is best effort, sent once, and its failure is counted and logged.
/// - A database that keeps failing pauses the worker (not ready, nothing new taken) with the
///   batch in hand, retried with capped backoff until it recovers: never requeued for that. Held
///   for `HAND_BACK_AFTER`, the commands are handed back unspent (a copy published, the original
///   acknowledged), prefetched ones included, and the worker stops consuming until the store
///   answers: the broker's acknowledgement timeout never meets a held command.
/// - A batch with a redelivery, or failing on a command's own error, is handled one command per
///   transaction; a redelivered command first commits a marker, so the worker that finds markers
///   left by crashes dead-letters that command alone (`HandlingAttempt`).
///
/// What happens to each delivery is decided by `DeliveryFate`; this type only wires the
/// connections, the store and the metrics, and executes its actions.
///
/// Graceful shutdown (SIGTERM/SIGINT through the ServiceGroup): stop taking commands, finish the
/// batches in hand, close both connections; unread prefetched commands go back to the queue, and
/// so does a batch held while the database was failing.
public final class CommandWorker: Service {
    public let configuration: WorkerConfiguration
    private let store: any CustomerStorage
    private let consumer: AMQPSession
    private let publisher: AMQPSession
    private let logger: Logger
    private let faults: FaultInjection
    private let metrics = WorkerMetrics()
    private let laneMetrics: FairShareMetrics
    /// Spans of the commands in hand; nil while tracing is off, so nothing is spent on them.
    private let traces: CommandTraces?
    private let attached = Atomic<Bool>(false)
    /// Monotonic time of the consume loop's last turn (it turns at least every 100 ms when idle).
    private let lastTurn = Atomic<UInt64>(0)
    /// Deliveries taken and not yet acknowledged or returned.
    private let unacked = Atomic<Int>(0)
    /// True while the worker holds a batch it cannot commit because the store keeps failing.
    private let paused = Atomic<Bool>(false)
    /// Monotonic time of the first publish failure since the last success; 0 while publishing works.
    private let publishFailingSince = Atomic<UInt64>(0)
    private let nodeGauges = Mutex(NodeGauges())
    private let refusalLog = Mutex(LogInterval(every: .seconds(60)))
    /// How long the loop may go without turning before liveness fails, in nanoseconds
    /// (`WorkerConfiguration.livenessWindow`).
    private let livenessWindow: UInt64

    /// `tracing`: whether an OpenTelemetry tracer is installed (`TracingBackend.bootstrap`).
    public init(configuration: WorkerConfiguration, store: any CustomerStorage, logger: Logger,
                faults: FaultInjection = FaultInjection(), tracing: Bool = false) throws(AMQPError) {
        self.configuration = configuration
        let databaseSystem = (try? configuration.databaseLocation).map { location in
            if case .postgres = location { "postgresql" } else { "sqlite" }
        } ?? "sqlite"
        traces = tracing ? CommandTraces(CommandSpans(queue: configuration.names.commandQueue,
                                                      eventsExchange: configuration.names.eventsExchange,
                                                      databaseSystem: databaseSystem)) : nil
        self.faults = faults
        laneMetrics = FairShareMetrics(configuration.fairShare)
        self.store = store
        self.logger = logger
        let (seconds, attoseconds) = configuration.livenessWindow.components
        livenessWindow = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
        let nodes = try configuration.amqpNodes.shuffled()  // once: both connections start on the same node
        let host = ProcessInfo.processInfo.hostName
        let pid = ProcessInfo.processInfo.processIdentifier
        func named(_ role: String) -> [ConnectionConfiguration] {
            nodes.map { var node = $0; node.connectionName = "customer-worker \(host) \(pid) \(role)"; return node }
        }
        consumer = AMQPSession(nodes: named("consumer"), order: .asGiven, recovery: configuration.reconnect, logger: logger, name: "consumer")
        publisher = AMQPSession(nodes: named("publisher"), order: .asGiven, recovery: configuration.reconnect, logger: logger, name: "publisher")
    }

    /// True while the consumer is attached to the command queue.
    public var isConsuming: Bool { attached.load(ordering: .relaxed) }

    /// True while the store keeps failing and the worker holds its batch instead of taking more.
    public var isPaused: Bool { paused.load(ordering: .relaxed) }

    /// Readiness: attached to the queue, both connections open (not reconnecting), the
    /// publisher's not blocked by the broker, and not paused by a failing store. Reads only
    /// published state, so a probe never waits for the worker.
    public var isReady: Bool {
        isConsuming && !isPaused && consumer.status.state.isConnected && publisher.status.isUsable
    }

    /// What `/readyz` adds to its answer: the broker node of each connection, and why the worker
    /// is not ready when it is paused or blocked.
    public var readinessDetail: String {
        let (consumerStatus, publisherStatus) = (consumer.status, publisher.status)
        var parts = ["consumer node: \(consumerStatus.node ?? "none")", "publisher node: \(publisherStatus.node ?? "none")"]
        if publisherStatus.isBlocked { parts.append("publishing blocked by the broker") }
        if isPaused { parts.append("paused: the database keeps failing") }
        return parts.joined(separator: ", ")
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
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await self.consumeUntilShutdown() }
                tasks.addTask { try await self.watchPublishing() }
                try await tasks.next()
                tasks.cancelAll()
            }
        } catch {
            await closeSessions()
            throw error
        }
        await closeSessions()
        logger.info("worker stopped")
    }

    private func start() async throws {
        try await consumer.declare(configuration.topology)
        // Remembered by the publisher, so it declares again what it publishes to after every
        // reconnect (an events exchange deleted while the worker runs comes back).
        try await publisher.declare(replyTopology)
        try await consumer.setPrefetch(UInt16(configuration.prefetch))
        try await publisher.enableConfirms()
        try await consumeCommandQueues()
        attached.store(true, ordering: .relaxed)
        logger.info("worker consuming", metadata: [
            "amqp.queue": "\(configuration.names.commandQueue)", "prefetch": "\(configuration.prefetch)",
            "fair_share.shards": "\(configuration.fairShareShards)",
            "amqp.node": "\(consumer.status.node ?? "")",
        ])
    }

    /// One consumer per queue of `WorkerConfiguration.commandQueues`, each with its own prefetch
    /// window (`FairShare`).
    private func consumeCommandQueues() async throws {
        for queue in configuration.commandQueues { try await consumer.consume(queue: queue) }
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
                traces?.received(deliveries)
                metrics.received.increment(by: deliveries.count)
                laneMetrics.record(deliveries)
                metrics.batchSize.record(deliveries.count)
                trackUnacked(deliveries.count)
                let answered: [Answered]
                var handingBack: [Delivery]?
                switch await persist(deliveries) {
                case .answered(let done):
                    answered = done
                case .interrupted(let unsettled):
                    // Shutting down while the database was failing: return what we hold.
                    if DeliveryFate.decide(.shutdown) == .requeue { await giveBack(unsettled) }
                    continue
                case .handBack(let done, let unsettled):
                    answered = done
                    handingBack = unsettled
                }
                if batchInFlight { try await publishing.next() }
                batchInFlight = !answered.isEmpty
                if batchInFlight {
                    publishing.addTask { await self.reply(to: answered, received: received) }
                }
                if let handingBack { try await pauseConsuming(handingBack: handingBack) }
            }
            try await publishing.waitForAll()
        }
    }

    /// The store kept failing for `HAND_BACK_AFTER` with commands in hand: stops consuming, hands
    /// back the unsettled commands of the batch and every prefetched one not taken yet, waits for
    /// the store to answer (probing it with backoff, not ready meanwhile), and consumes again.
    private func pauseConsuming(handingBack held: [Delivery]) async throws {
        attached.store(false, ordering: .relaxed)
        setPaused(true)
        let pausedSince = ContinuousClock.now
        let prefetched: [Delivery]
        do {
            prefetched = try await consumer.stopConsuming()
        } catch {
            // The channel is gone, and with it what it delivered: the broker has requeued it all.
            logger.warning("could not stop consuming; the broker requeued what the channel held", metadata: ["error": "\(error)"])
            prefetched = []
        }
        await handBack(held, taken: true)
        await handBack(prefetched, taken: false)
        logger.warning("database unavailable too long: commands handed back, consuming again once it answers", metadata: [
            "batch.size": "\(held.count + prefetched.count)", "hand_back_after": "\(configuration.handBackAfter)",
        ])
        defer { setPaused(false) }
        let probe = await withAvailableStore("database check", batchSize: 0, pausedSince: pausedSince) { try await self.store.checkWritable() }
        if case .interrupted = probe { return }
        try await consumeCommandQueues()
        attached.store(true, ordering: .relaxed)
        logger.notice("worker consuming again", metadata: ["amqp.queue": "\(configuration.names.commandQueue)"])
    }

    private func noteReconnects(_ generation: inout UInt64) async {
        let current = await consumer.generation
        if current != generation {
            metrics.reconnects.increment(by: Int(current - generation))
            generation = current
        }
        nodeGauges.withLock { $0.note(consumer: consumer.status.node, publisher: publisher.status.node, logger: logger) }
    }

    /// The events exchange, the replies queue and their binding: what the publisher needs.
    private var replyTopology: Topology {
        let all = configuration.topology
        let events = configuration.names.eventsExchange
        return Topology(exchanges: all.exchanges.filter { $0.name == events },
                        queues: all.queues.filter { $0.name == configuration.names.repliesQueue },
                        bindings: all.bindings.filter { $0.exchange == events })
    }

    /// Ends the worker with an error (a non-zero exit) once publishing replies has failed without
    /// a success for `publishFailureTimeout`: an orchestrator restarts it instead of it holding
    /// commands it cannot answer.
    private func watchPublishing() async throws {
        let limit = UInt64(configuration.publishFailureTimeout.components.seconds) * 1_000_000_000
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(250))
            let since = publishFailingSince.load(ordering: .relaxed)
            if since != 0, DispatchTime.now().uptimeNanoseconds - since > limit {
                logger.critical("cannot publish replies; exiting so the worker is restarted", metadata: [
                    "publish_failure_timeout": "\(configuration.publishFailureTimeout)",
                ])
                throw PublishingFailed(timeout: configuration.publishFailureTimeout)
            }
        }
    }

    struct PublishingFailed: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "publishing replies kept failing for \(timeout) (PUBLISH_FAILURE_TIMEOUT)" }
    }

    // MARK: Stage 1: transactions

    /// A delivery and the reply its transaction produced.
    struct Answered: Sendable {
        let delivery: Delivery
        let reply: ReplyRecord
    }

    enum Persisted: Sendable {
        /// Replies for the deliveries not dead-lettered (those are settled already).
        case answered([Answered])
        /// Shutdown came while the database was failing: these deliveries are still ours.
        case interrupted(unsettled: [Delivery])
        /// The database kept failing for `HAND_BACK_AFTER`: `answered` were stored (their replies
        /// go out), `unsettled` are to be handed back.
        case handBack(answered: [Answered], unsettled: [Delivery])
    }

    private func incoming(_ delivery: Delivery) -> IncomingCommand {
        IncomingCommand(apiKey: delivery.properties.headers["x-api-key"]?.stringValue, contentType: delivery.properties.contentType,
                        body: delivery.body, headersTooDeep: delivery.properties.headersTooDeep)
    }

    /// What a store operation came to.
    enum StoreResult<T: Sendable>: Sendable {
        case success(T)
        /// The command's (or the batch's) own fault, and what `DeliveryFate` says to do about it.
        case ownFault(DeliveryFate.Action)
        /// Shutdown came while the database was failing.
        case interrupted
        /// The database kept failing while the commands in hand were held for `HAND_BACK_AFTER`.
        case handBack
    }

    /// Stores the batch as `DeliveryFate` says: one transaction for first deliveries; one command
    /// per transaction for a batch with a redelivery (marked, so a poison command takes only
    /// itself to the dead-letter queue) or one failing on a command's own fault.
    private func persist(_ deliveries: [Delivery]) async -> Persisted {
        if case .storeOneByOne(let mark) = DeliveryFate.decide(.received(anyRedelivered: deliveries.contains(where: \.redelivered))) {
            return await persistOneByOne(deliveries, markAttempts: mark)
        }
        faults.crashIfTargeted(deliveries, logger: logger)
        let commands = deliveries.map(incoming)
        let span = traces?.transactionSpan(deliveries.map(\.tag))
        let heldSince = deliveries.map(\.receivedAt).min()
        let result = await withAvailableStore("database transaction", batchSize: deliveries.count, heldSince: heldSince, span: span) {
            let start = ContinuousClock.now
            let outcomes = try await self.store.process(commands, now: Date())
            self.metrics.transaction.recordSince(start)
            return outcomes
        }
        span?.end()
        switch result {
        case .success(let outcomes):
            var answered: [Answered] = []
            for (delivery, outcome) in zip(deliveries, outcomes) {
                if let item = await settle(delivery, outcome, key: nil) { answered.append(item) }
            }
            return .answered(answered)
        case .ownFault(.storeOneByOne(let mark)):
            logger.warning("batch failed on a command's own error; handling its commands one by one", metadata: [
                "batch.size": "\(deliveries.count)",
            ])
            return await persistOneByOne(deliveries, markAttempts: mark)
        case .ownFault:
            return await persistOneByOne(deliveries, markAttempts: false)
        case .interrupted:
            return .interrupted(unsettled: deliveries)
        case .handBack:
            return .handBack(answered: [], unsettled: deliveries)
        }
    }

    /// One transaction per command. With `markAttempts`, each redelivered command first commits a
    /// marker, which the transaction doing its work removes first thing (see `HandlingAttempt`).
    private func persistOneByOne(_ deliveries: [Delivery], markAttempts: Bool) async -> Persisted {
        var answered: [Answered] = []
        let heldSince = deliveries.map(\.receivedAt).min()
        for (index, delivery) in deliveries.enumerated() {
            let command = incoming(delivery)
            let marked = markAttempts && delivery.redelivered
            let key = HandlingAttempt.key(apiKey: command.apiKey, messageID: delivery.properties.messageID, body: delivery.body)
            if marked {
                switch await withAvailableStore("record a handling attempt", batchSize: 1, heldSince: heldSince, {
                    try await self.store.beginAttempt(key: key, now: Date())
                }) {
                case .success(let earlier):
                    if case .deadLetter(let reason, let detail) = DeliveryFate.decide(.attemptCounted(earlierUnfinished: earlier)) {
                        await deadLetter(delivery, reason, key: key, reason: detail)
                        continue
                    }
                case .ownFault:
                    break
                case .interrupted:
                    return .interrupted(unsettled: answered.map(\.delivery) + deliveries[index...])
                case .handBack:
                    return .handBack(answered: answered, unsettled: Array(deliveries[index...]))
                }
            }
            faults.crashIfTargeted(CollectionOfOne(delivery), logger: logger)
            let span = traces?.transactionSpan([delivery.tag])
            let result = await withAvailableStore("database transaction", batchSize: 1, heldSince: heldSince, span: span) {
                try await self.store.process([command], now: Date(), finishingAttempts: marked ? [key] : [])[0]
            }
            span?.end()
            switch result {
            case .success(let outcome):
                if let item = await settle(delivery, outcome, key: nil) { answered.append(item) }
            case .ownFault(.deadLetter(let reason, let detail)):
                await deadLetter(delivery, reason, key: marked ? key : nil, reason: detail)
            case .ownFault:
                await deadLetter(delivery, .failed, key: marked ? key : nil, reason: "its transaction failed on its own")
            case .interrupted:
                // The database is failing, so the marker stays (clearing it would only wait for
                // the connect timeout); one marker left behind never dead-letters (`DeliveryFate`).
                return .interrupted(unsettled: answered.map(\.delivery) + deliveries[index...])
            case .handBack:
                // Its marker stays too; the copy arrives as a first delivery and commits nothing new.
                return .handBack(answered: answered, unsettled: Array(deliveries[index...]))
            }
        }
        return .answered(answered)
    }

    /// A stored command: its reply to publish, or (dead-lettered now) nil.
    private func settle(_ delivery: Delivery, _ outcome: CommandOutcome, key: String?) async -> Answered? {
        switch DeliveryFate.decide(.stored(outcome)) {
        case .publish(let reply):
            return Answered(delivery: delivery, reply: reply)
        case .deadLetter(let reason, let detail):
            await deadLetter(delivery, reason, key: key, reason: detail)
            return nil
        default:
            preconditionFailure("DeliveryFate answered a stored command with something else")
        }
    }

    /// Rejects a delivery without requeueing it: the queue dead-letters it.
    private func deadLetter(_ delivery: Delivery, _ reason: WorkerMetrics.DeadLetterReason, key: String?, reason detail: String) async {
        await consumer.reject(delivery.tag, requeue: false)
        trackUnacked(-1)
        metrics.deadLettered(reason)
        ServiceContext.withValue(traces?.context(delivery.tag)) {
            logger.error("command sent to the dead-letter queue", metadata: [
                "command.message_id": "\(delivery.properties.messageID ?? "")", "dead_letter.reason": "\(reason.rawValue)",
                "error": "\(detail)",
            ])
        }
        traces?.settle([delivery.tag], .deadLettered(reason: reason.rawValue))
        if let key { try? await store.clearAttempt(key: key) }
    }

    /// Runs a store operation until it succeeds, fails on the commands' own fault, or shutdown
    /// comes. While the database is unavailable (or fails in a way nobody classified), the worker
    /// holds what it has, takes nothing new, reports not ready, and retries with capped backoff:
    /// an outage never spends the commands' deliveries.
    /// `heldSince`: when the oldest command in hand was received; once it was held for
    /// `HAND_BACK_AFTER`, this answers `.handBack` (nil: nothing held, retry until the store answers).
    /// `pausedSince`: when the pause began, for a caller already paused.
    /// `span`: the transaction's span, if traced; each failed attempt is recorded on it.
    private func withAvailableStore<T: Sendable>(_ operation: String, batchSize: Int, heldSince: ContinuousClock.Instant? = nil,
                                                 pausedSince: ContinuousClock.Instant? = nil, span: (any Span)? = nil,
                                                 _ body: @Sendable () async throws -> T) async -> StoreResult<T> {
        var attempt = 0
        var pausedSince = pausedSince
        defer { if pausedSince != nil { setPaused(false) } }
        while true {
            do {
                let value = try await body()
                if let pausedSince {
                    logger.notice("database available again; resuming", metadata: [
                        "operation": "\(operation)", "attempt": "\(attempt + 1)",
                        "paused.seconds": "\((ContinuousClock.now - pausedSince).components.seconds)",
                    ])
                }
                return .success(value)
            } catch {
                if Task.isCancelled || error is CancellationError { return .interrupted }
                span?.recordError(error)
                let failure = store.classify(error)
                let action = DeliveryFate.decide(.storeFailed(failure, commands: batchSize, error: "\(error)"))
                guard case .pauseAndRetry(let unclassified) = action else {
                    span?.setStatus(SpanStatus(code: .error, message: "\(failure.kind.rawValue) \(failure.code)"))
                    return .ownFault(action)
                }
                attempt += 1
                metrics.storeFailures.increment()
                if pausedSince == nil {
                    pausedSince = .now
                    setPaused(true)
                }
                if unclassified {
                    logger.error("unclassified database error: paused, holding the batch and retrying", metadata: [
                        "operation": "\(operation)", "attempt": "\(attempt)", "batch.size": "\(batchSize)",
                        "error.code": "\(failure.code)", "error": "\(error)",
                    ])
                } else {
                    logger.log(level: attempt == 1 ? .error : .warning, "database unavailable: paused, holding the batch and retrying", metadata: [
                        "operation": "\(operation)", "attempt": "\(attempt)", "batch.size": "\(batchSize)",
                        "error.class": "\(failure.kind.rawValue)", "error.code": "\(failure.code)", "error": "\(error)",
                    ])
                }
                var delay = configuration.storeRetryBackoff.delay(beforeAttempt: attempt)
                if let heldSince {
                    let heldFor = ContinuousClock.now - heldSince
                    if DeliveryFate.decide(.storeStillFailing(heldFor: heldFor, handBackAfter: configuration.handBackAfter)) == .handBack {
                        return .handBack
                    }
                    delay = min(delay, configuration.handBackAfter - heldFor)  // hand back on time
                }
                if await sleepUnlessShuttingDown(delay) { return .interrupted }
            }
        }
    }

    private func setPaused(_ value: Bool) {
        paused.store(value, ordering: .relaxed)
        metrics.paused.record(value ? 1 : 0)
    }

    /// Sleeps in short steps, keeping liveness fresh (a pause is a decision, not a hang); true
    /// when graceful shutdown or cancellation came first.
    private func sleepUnlessShuttingDown(_ delay: Duration) async -> Bool {
        let deadline = ContinuousClock.now + delay
        while ContinuousClock.now < deadline {
            lastTurn.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
            if Task.isShuttingDownGracefully || Task.isCancelled { return true }
            try? await Task.sleep(for: min(.milliseconds(100), deadline - ContinuousClock.now))
        }
        return Task.isShuttingDownGracefully || Task.isCancelled
    }

    // MARK: Stage 2: publish, await confirms, ack

    /// Publishes every reply to the events exchange (these confirms gate the ack) and, once and
    /// best effort, to each command's allowed `reply_to`. A `reply_to` copy that is refused,
    /// nacked, returned or lost is counted and logged, and never fails, delays or repeats another
    /// command's reply: retries publish only the events copies still unconfirmed.
    private func reply(to stored: [Answered], received: ContinuousClock.Instant) async {
        let generation = await consumer.generation
        let answered = stored.filter { $0.delivery.tag.connectionGeneration == generation }
        if answered.count < stored.count, DeliveryFate.decide(.channelClosedSinceDelivery) == .forget {
            // The broker has requeued these; their redeliveries replay the stored replies.
            trackUnacked(answered.count - stored.count)
            traces?.settle(stored.filter { $0.delivery.tag.connectionGeneration != generation }.map(\.delivery.tag), .leftToRedelivery)
            logger.notice("not replying to commands whose channel closed meanwhile; their redeliveries will", metadata: [
                "batch.size": "\(stored.count - answered.count)",
            ])
        }
        guard !answered.isEmpty else { return }
        metrics.record(answered.map(\.reply))
        let timestamp = UInt64(Date().timeIntervalSince1970)
        var events: [OutgoingMessage] = []
        var copies: [OutgoingMessage] = []
        events.reserveCapacity(answered.count)
        for item in answered {
            let envelope = ReplyEnvelope(command: item.delivery.properties, reply: item.reply, configuration: configuration,
                                         timestamp: timestamp, traceHeaders: traces?.replyHeaders(item.delivery.tag) ?? [:])
            events.append(envelope.events)
            if let copy = envelope.replyToCopy { copies.append(copy) }
            if let name = envelope.refusedReplyTo {
                metrics.replyToUndelivered(.refused)
                // A sender can repeat this at the broker's rate: one line a minute, with a count.
                if let earlier = refusalLog.withLock({ $0.shouldLog() }) {
                    logger.notice("reply_to not allowed; the reply goes to the events exchange only", metadata: [
                        "command.message_id": "\(item.delivery.properties.messageID ?? "")", "reply_to": "\(name.prefix(255))",
                        "reply_to.refused_since_last_line": "\(earlier)",
                    ])
                }
            }
            if envelope.droppedCorrelationID {
                logger.notice("correlation_id too long to carry (over 255 bytes as UTF-8); the reply carries the message_id", metadata: [
                    "command.message_id": "\(item.delivery.properties.messageID ?? "")",
                ])
            }
        }
        let span = traces?.publishSpan(answered.map(\.delivery.tag))
        defer { span?.end() }
        var unpublishable: [Int: String] = [:]
        var pending = Array(events.indices)
        var copiesToSend = copies
        var attempt = 0
        while !pending.isEmpty {
            attempt += 1
            span?.attributes["customer_worker.publish.attempts"] = attempt
            let sending = pending.map { events[$0] } + copiesToSend
            let sentCopies = copiesToSend
            copiesToSend = []  // reply_to copies get one attempt only
            do {
                let start = ContinuousClock.now
                let outcomes: [PublishOutcome]
                do {
                    outcomes = try await publisher.publish(sending, timeout: configuration.confirmTimeout)
                    publishFailingSince.store(0, ordering: .relaxed)
                } catch {
                    _ = publishFailingSince.compareExchange(expected: 0, desired: DispatchTime.now().uptimeNanoseconds, ordering: .relaxed)
                    throw error
                }
                metrics.confirm.recordSince(start)
                pending = settleEvents(pending, events: events, outcomes: outcomes.prefix(pending.count), unpublishable: &unpublishable)
                noteCopies(sentCopies, outcomes: outcomes.dropFirst(outcomes.count - sentCopies.count))
                if !pending.isEmpty { throw ReplyNotConfirmed(nacked: pending.count) }
            } catch {
                if !sentCopies.isEmpty, !(error is ReplyNotConfirmed) { metrics.replyToUndelivered(.error, count: sentCopies.count) }
                span?.recordError(error)
                metrics.transientFailures.increment()
                let exhausted = Task.isCancelled
                    || DeliveryFate.decide(.publishFailed(attempt: attempt, limit: configuration.transientAttempts)) == .requeue
                logger.log(level: exhausted ? .error : .warning, "transient failure", metadata: [
                    "operation": "publishing replies", "attempt": "\(attempt)", "batch.size": "\(answered.count)", "error": "\(error)",
                ])
                if exhausted {
                    span?.setStatus(SpanStatus(code: .error, message: "replies not confirmed; commands returned to the queue"))
                    await giveBack(answered.map(\.delivery))
                    try? await Task.sleep(for: configuration.transientBackoff.maximumDelay)
                    return
                }
                try? await Task.sleep(for: configuration.transientBackoff.delay(beforeAttempt: attempt))
            }
        }
        // A reply that can never be published is its command's own failure: that command alone
        // goes to the dead-letter queue (before the ack, which must not cover it).
        for (index, detail) in unpublishable.sorted(by: { $0.key < $1.key }) {
            await deadLetter(answered[index].delivery, .failed, key: nil, reason: detail)
        }
        let acked = answered.indices.filter { unpublishable[$0] == nil }.map { answered[$0] }
        guard let last = acked.last else { return }
        if await consumer.ack(last.delivery.tag, multiple: true) {
            let elapsed = ContinuousClock.now - received
            for _ in acked { metrics.handling.record(duration: elapsed) }
        }
        trackUnacked(-acked.count)
        logBatch(acked)
        if let traces {
            for item in acked {
                traces.settle([item.delivery.tag], .acknowledged(.init(type: item.reply.type.rawValue, errorCode: item.reply.errorCode,
                                                                        replayed: item.reply.replayed)))
            }
        }
    }

    /// The events copies (indices into `events`) the broker did not take.
    private func settleEvents(_ pending: [Int], events: [OutgoingMessage], outcomes: ArraySlice<PublishOutcome>,
                              unpublishable: inout [Int: String]) -> [Int] {
        var nacked: [Int] = []
        for (index, outcome) in zip(pending, outcomes) {
            switch DeliveryFate.decide(.eventsCopy(outcome)) {
            case .publishAgain:
                nacked.append(index)
            case .deadLetter(_, let detail):
                unpublishable[index] = detail
            case .ackReturned:
                if case .returned(let code, let text) = outcome {
                    logger.warning("reply not routed: nothing is bound to the events exchange", metadata: [
                        "reply.routing_key": "\(events[index].routingKey)", "amqp.reply_code": "\(code)", "amqp.reply_text": "\(text)",
                    ])
                }
            default:
                continue
            }
        }
        return nacked
    }

    /// Counts and logs (debug) the reply_to copies the broker did not deliver.
    private func noteCopies(_ copies: [OutgoingMessage], outcomes: ArraySlice<PublishOutcome>) {
        for (copy, outcome) in zip(copies, outcomes) {
            let failure: WorkerMetrics.ReplyToFailure
            switch outcome {
            case .confirmed: continue
            case .nacked: failure = .nacked
            case .returned: failure = .returned  // the requester's queue is gone (it stopped waiting)
            case .unencodable: failure = .error
            }
            metrics.replyToUndelivered(failure)
            logger.debug("reply_to copy not delivered; the events copy stands", metadata: [
                "command.message_id": "\(copy.properties.correlationID ?? "")", "reply_to.outcome": "\(failure.rawValue)",
            ])
        }
    }

    struct ReplyNotConfirmed: Error, CustomStringConvertible {
        let nacked: Int
        var description: String { "the broker refused (nacked) \(nacked) replies to the events exchange" }
    }

    // MARK: Failure handling

    /// Returns deliveries to the queue, one by one (so no other batch's deliveries go along).
    /// Requeues count toward the delivery limit: only for replies that could not be published,
    /// and for what the worker holds at shutdown; a delivery at its last is handed back instead
    /// (`DeliveryFate`), so a requeue never dead-letters a command (its transaction may have committed).
    /// `basic.reject`, not `basic.nack`: RabbitMQ 3.10 counts both, 4.3 no longer counts a nack,
    /// and the count is what brings a command to its last delivery the same way on both.
    private func giveBack(_ deliveries: [Delivery]) async {
        guard !deliveries.isEmpty else { return }
        var requeued: [Delivery] = []
        var atTheLimit: [Delivery] = []
        for delivery in deliveries {
            let fate = DeliveryFate.decide(.returning(deliveryCount: delivery.deliveryCount, limit: configuration.deliveryLimit))
            if fate == .handBack { atTheLimit.append(delivery) } else { requeued.append(delivery) }
        }
        await handBack(atTheLimit, taken: true)
        guard !requeued.isEmpty else { return }
        for delivery in requeued {
            await consumer.reject(delivery.tag, requeue: true)
        }
        trackUnacked(-requeued.count)
        logger.error("commands returned to the queue", metadata: ["batch.size": "\(requeued.count)"])
        traces?.settle(requeued.map(\.tag), .returned)
    }

    /// Hands deliveries back without spending one of their deliveries (`DeliveryFate`): each one's
    /// copy goes to the command queue (through the default exchange, so no other queue bound to
    /// the command exchange gets one) with publisher confirms, then the original is acknowledged.
    /// A copy the broker does not confirm leaves its original requeued instead; deliveries of an
    /// earlier connection are left alone (the broker requeued them already). `taken`: whether the
    /// worker counted them as in hand (prefetched ones it never took are not).
    private func handBack(_ deliveries: [Delivery], taken: Bool) async {
        guard !deliveries.isEmpty else { return }
        let generation = await consumer.generation
        let current = deliveries.filter { $0.tag.connectionGeneration == generation }
        // A delivery that cannot be copied unchanged is requeued.
        let user = publisher.configuration.user
        let copyable = current.filter { $0.canBeHandedBack(publishingAs: user) }
        let copies = copyable.map { $0.handBackCopy(fallbackQueue: configuration.names.commandQueue) }
        var outcomes: [PublishOutcome?] = Array(repeating: nil, count: copies.count)
        do {
            outcomes = try await publisher.publish(copies, timeout: configuration.confirmTimeout)
        } catch {
            logger.error("handing commands back failed; they are requeued instead", metadata: [
                "batch.size": "\(copies.count)", "error": "\(error)",
            ])
        }
        var handedBack = 0
        var requeued = current.filter { !$0.canBeHandedBack(publishingAs: user) }
        for (delivery, outcome) in zip(copyable, outcomes) {
            if DeliveryFate.decide(.handedBack(outcome)) == .ack {
                await consumer.ack(delivery.tag)
                handedBack += 1
            } else {
                requeued.append(delivery)
            }
        }
        for delivery in requeued { await consumer.nack(delivery.tag, multiple: false, requeue: true) }
        if taken { trackUnacked(-deliveries.count) }
        metrics.handedBack.increment(by: handedBack)
        logger.warning("commands handed back to the queue", metadata: [
            "batch.size": "\(handedBack)", "requeued": "\(requeued.count)", "left_to_redelivery": "\(deliveries.count - current.count)",
        ])
        if taken { traces?.settle(deliveries.map(\.tag), .returned) }
    }

    private func trackUnacked(_ change: Int) {
        let now = unacked.add(change, ordering: .relaxed).newValue
        metrics.unacked.record(now)
    }

    private func logBatch(_ answered: [Answered]) {
        guard logger.logLevel <= .debug else { return }
        for item in answered {
            ServiceContext.withValue(traces?.context(item.delivery.tag)) {
                logger.debug("command handled", metadata: [
                    "command.message_id": "\(item.delivery.properties.messageID ?? "")",
                    "reply.type": "\(item.reply.type.rawValue)",
                    "reply.code": "\(item.reply.errorCode ?? "none")",
                    "reply.replayed": "\(item.reply.replayed)",
                    "delivery.redelivered": "\(item.delivery.redelivered)",
                ])
            }
        }
    }
}

/// `MetricName.amqpNode{session, node}`: 1 for the broker node each connection uses, 0 for
/// one it used before; a change is logged.
struct NodeGauges {
    private var current: [String: String] = [:]

    mutating func note(consumer: String?, publisher: String?, logger: Logger) {
        for (session, node) in [("consumer", consumer), ("publisher", publisher)] {
            guard let node, current[session] != node else { continue }
            if let previous = current[session] {
                Gauge(label: MetricName.amqpNode, dimensions: [("session", session), ("node", previous)]).record(0)
                logger.notice("AMQP connection moved to another broker node", metadata: [
                    "amqp.session": "\(session)", "amqp.node": "\(node)", "amqp.previous_node": "\(previous)",
                ])
            }
            Gauge(label: MetricName.amqpNode, dimensions: [("session", session), ("node", node)]).record(1)
            current[session] = node
        }
    }
}

/// At most one log line per interval for an event a sender can cause at will.
struct LogInterval {
    let every: Duration
    private var last: ContinuousClock.Instant?
    private var skipped = 0

    init(every: Duration) { self.every = every }

    /// The number of events not logged since the last line when this one is to be logged; nil
    /// when it is to be skipped (and counted).
    mutating func shouldLog(now: ContinuousClock.Instant = .now) -> Int? {
        if let last, now - last < every {
            skipped += 1
            return nil
        }
        defer { last = now; skipped = 0 }
        return skipped
    }
}

