import AMQP
import CreateCustomer
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
/// What happens to each batch is decided by `BatchMachine` (applying `DeliveryFate`'s table);
/// this type only wires the connections, the store and the metrics, and executes the machine's
/// actions. Timing is `Pacer`'s, readiness and liveness `WorkerHealth`'s, building and publishing
/// the replies `ReplyPublisher`'s.
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
    private let metrics = WorkerMetrics()
    private let laneMetrics: FairShareMetrics
    /// Spans of the commands in hand; nil while tracing is off, so nothing is spent on them.
    private let traces: CommandTraces?
    private let health: WorkerHealth
    private let pacer: Pacer
    private let rules: BatchMachine.Rules
    /// Deliveries taken and not yet acknowledged or returned.
    private let unacked = Atomic<Int>(0)
    private let nodeGauges = Mutex(NodeGauges())
    /// Builds and publishes each batch's replies, and ends the worker when publishing keeps failing.
    private let replyPublisher: ReplyPublisher

    /// `tracing`: whether an OpenTelemetry tracer is installed (`TracingBackend.bootstrap`).
    public init(configuration: WorkerConfiguration, store: any CustomerStorage, logger: Logger, tracing: Bool = false) throws(AMQPError) {
        self.configuration = configuration
        let databaseSystem = (try? configuration.databaseLocation).map { location in
            if case .postgres = location { "postgresql" } else { "sqlite" }
        } ?? "sqlite"
        traces = tracing ? CommandTraces(CommandSpans(queue: configuration.names.commandQueue,
                                                      eventsExchange: configuration.names.eventsExchange,
                                                      databaseSystem: databaseSystem)) : nil
        laneMetrics = FairShareMetrics(configuration.fairShare)
        self.store = store
        self.logger = logger
        health = WorkerHealth(livenessWindow: configuration.livenessWindow)
        pacer = Pacer(storeRetry: configuration.storeRetryBackoff, publishRetry: configuration.transientBackoff)
        rules = BatchMachine.Rules(deliveryLimit: configuration.deliveryLimit, transientAttempts: configuration.transientAttempts,
                                   handBackAfter: configuration.handBackAfter)
        let nodes = try configuration.amqpNodes.shuffled()  // once: both connections start on the same node
        let host = ProcessInfo.processInfo.hostName
        let pid = ProcessInfo.processInfo.processIdentifier
        func named(_ role: String) -> [ConnectionConfiguration] {
            nodes.map { var node = $0; node.connectionName = "customer-worker \(host) \(pid) \(role)"; return node }
        }
        consumer = AMQPSession(nodes: named("consumer"), order: .asGiven, recovery: configuration.reconnect, logger: logger, name: "consumer")
        publisher = AMQPSession(nodes: named("publisher"), order: .asGiven, recovery: configuration.reconnect, logger: logger, name: "publisher")
        replyPublisher = ReplyPublisher(publisher: publisher, configuration: configuration, metrics: metrics, traces: traces, logger: logger)
    }

    /// True while the consumer is attached to the command queue.
    public var isConsuming: Bool { health.isConsuming }

    /// True while the store keeps failing and the worker holds its batch instead of taking more.
    public var isPaused: Bool { health.isPaused }

    /// Readiness (`WorkerHealth.isReady`). Reads only published state, so a probe never waits for the worker.
    public var isReady: Bool { health.isReady(consumer: consumer.status, publisher: publisher.status) }

    /// What `/readyz` adds to its answer: the broker node of each connection, and why the worker
    /// is not ready when it is paused or blocked.
    public var readinessDetail: String {
        let (consumerStatus, publisherStatus) = (consumer.status, publisher.status)
        var parts = ["consumer node: \(consumerStatus.node ?? "none")", "publisher node: \(publisherStatus.node ?? "none")"]
        if publisherStatus.isBlocked { parts.append("publishing blocked by the broker") }
        if isPaused { parts.append("paused: the database keeps failing") }
        return parts.joined(separator: ", ")
    }

    /// Liveness (`WorkerHealth.isLive`).
    public var isLive: Bool { health.isLive(recovering: consumer.isRecovering || publisher.isRecovering) }

    public func run() async throws {
        try await start()
        defer { health.setConsuming(false) }
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await self.consumeUntilShutdown() }
                tasks.addTask { try await self.replyPublisher.watch() }
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
        try await FairShare.declare(configuration.topology, on: consumer)
        // Remembered by the publisher, so it declares again what it publishes to after every
        // reconnect (an events exchange deleted while the worker runs comes back).
        try await publisher.declare(replyTopology)
        try await consumer.setPrefetch(UInt16(configuration.prefetch))
        try await publisher.enableConfirms()
        try await consumeCommandQueues()
        health.setConsuming(true)
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

    /// The longest the consume loop waits for a command while idle before it turns anyway: a turn
    /// is the loop's heartbeat for liveness (`WorkerHealth`) and when reconnects and broker nodes
    /// are counted. It is not how shutdown is noticed (a handler ends the wait at once).
    static let idleTurn: Duration = .seconds(1)

    /// Takes batches and runs each through its machine: the store phase here, then the publish
    /// phase in a child task, overlapping the next batch's store phase (at most one batch in each).
    private func consumeUntilShutdown() async throws {
        try await withThrowingTaskGroup(of: Void.self) { publishing in
            var batchInFlight = false
            var generation = await consumer.generation
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                health.turned()
                // Graceful shutdown ends the wait through its handler, cancellation through the
                // session's own handler: neither is polled. The bound is the loop's idle turn.
                let consumer = consumer
                let deliveries = try await withGracefulShutdownHandler {
                    try await consumer.nextDeliveries(maximum: configuration.batchLimit, wait: Self.idleTurn, linger: configuration.batchLinger)
                } onGracefulShutdown: {
                    consumer.endDeliveryWaits()
                }
                await noteReconnects(&generation)
                guard !deliveries.isEmpty else { continue }
                let received = ContinuousClock.now
                traces?.received(deliveries)
                metrics.received.increment(by: deliveries.count)
                laneMetrics.record(deliveries)
                metrics.batchSize.record(deliveries.count)
                trackUnacked(deliveries.count)
                var machine = BatchMachine(deliveries, rules: rules, publisherUser: publisher.configuration.user)
                let awaitStore = await runStorePhase(&machine)
                if batchInFlight { try await publishing.next() }
                batchInFlight = machine.hasReplies
                if batchInFlight {
                    let stored = machine
                    publishing.addTask { await self.runPublishPhase(stored, received: received) }
                }
                if awaitStore { try await consumeAgainOnceTheStoreAnswers() }
            }
            try await publishing.waitForAll()
        }
    }

    // MARK: Executing a batch's machine

    /// Executes the machine's store-phase actions until the phase is over; true when it stopped
    /// consuming (the hand-back) and the worker must wait for the store before consuming again.
    private func runStorePhase(_ machine: inout BatchMachine) async -> Bool {
        var action = machine.start()
        while true {
            let wasPaused = machine.pausedSince != nil
            switch action {
            case .storePhaseOver(let awaitStore):
                return awaitStore
            case .beginAttempt(_, let key):
                do {
                    let earlier = try await store.beginAttempt(key: key, now: Date())
                    noteStoreAnswered(machine, operation: "record a handling attempt")
                    action = machine.attemptCounted(earlierUnfinished: earlier)
                } catch {
                    action = storeFailed(&machine, error, span: nil)
                }
            case .store(let indices, let finishing):
                let deliveries = indices.map { machine.items[$0].delivery }
                let span = traces?.transactionSpan(deliveries.map(\.tag))
                do {
                    let start = ContinuousClock.now
                    let outcomes = try await store.process(deliveries.map(incoming), now: Date(), finishingAttempts: finishing)
                    metrics.transaction.recordSince(start)
                    span?.end()
                    noteStoreAnswered(machine, operation: "database transaction")
                    action = machine.stored(outcomes)
                } catch {
                    action = storeFailed(&machine, error, span: span)
                    span?.end()
                }
                if case .store(let next, _) = action, next.count == 1, indices.count > 1 {
                    logger.warning("batch failed on a command's own error; handling its commands one by one", metadata: [
                        "batch.size": "\(indices.count)",
                    ])
                }
            case .pause(let pause):
                logPause(pause)
                action = await pacer.wait(pause, health: health) ? machine.shutdown() : machine.tick()
            case .stopConsuming:
                health.setConsuming(false)
                let prefetched: [Delivery]
                do {
                    prefetched = try await consumer.stopConsuming()
                } catch {
                    // The channel is gone, and with it what it delivered: the broker has requeued it all.
                    logger.warning("could not stop consuming; the broker requeued what the channel held", metadata: ["error": "\(error)"])
                    prefetched = []
                }
                action = machine.consumingStopped(prefetched: prefetched, publisherUser: publisher.configuration.user)
                if !machine.shuttingDown {
                    logger.warning("database unavailable too long: commands handed back, consuming again once it answers", metadata: [
                        "batch.size": "\(machine.items.filter { !$0.isSettled && $0.reply == nil }.count)",
                        "hand_back_after": "\(configuration.handBackAfter)",
                    ])
                }
            case .effect(let effect):
                await perform(effect, machine)
                action = machine.executed()
            case .handBack(let step):
                action = await handBack(step, &machine)
            }
            if wasPaused, machine.pausedSince == nil { setPaused(false) }
        }
    }

    /// Executes the machine's publish-phase actions until it is finished.
    private func runPublishPhase(_ stored: BatchMachine, received: ContinuousClock.Instant) async {
        var machine = stored
        var action = machine.startPublishing(generation: liveGeneration)
        var replies: ReplyPublisher.Replies?
        while true {
            switch action {
            case .finished:
                replies?.span?.end()
                return
            case .publish(let events, let copies, let attempt):
                if replies == nil { replies = replyPublisher.prepare(machine) }
                action = await replyPublisher.publish(events: events, copies: copies, attempt: attempt, replies: &replies!, &machine)
            case .pause(let pause):
                action = await pacer.wait(pause, health: health) ? machine.shutdown() : machine.tick()
            case .ack(let indices):
                await acknowledge(indices, machine, received: received)
                action = machine.executed()
            case .effect(let effect):
                await perform(effect, machine)
                action = machine.executed()
            case .handBack(let step):
                action = await handBack(step, &machine)
            }
        }
    }

    /// `basic.ack` with `multiple` up to `last`, covering `indices` (all confirmed).
    private func acknowledge(_ indices: [Int], _ machine: BatchMachine, received: ContinuousClock.Instant) async {
        // Exactly the batch's deliveries: under fair share they were handed out in round robin
        // across the shards, so `multiple` on the last one could cover others still in hand.
        if await consumer.ack(indices.map { machine.items[$0].delivery.tag }) {
            let elapsed = ContinuousClock.now - received
            for _ in indices { metrics.handling.record(duration: elapsed) }
        }
        trackUnacked(-indices.count)
        let acked = indices.map { machine.items[$0] }
        logBatch(acked)
        if let traces {
            for item in acked {
                guard let reply = item.reply else { continue }
                traces.settle([item.delivery.tag], .acknowledged(.init(type: reply.type.rawValue, errorCode: reply.errorCode,
                                                                      replayed: reply.replayed)))
            }
        }
    }

    /// The side effects both phases share: dead-letters, markers, requeues, settling a hand-back.
    private func perform(_ effect: BatchMachine.Effect, _ machine: BatchMachine) async {
        switch effect {
        case .deadLetter(let letters):
            for letter in letters { await deadLetter(machine.items[letter.item].delivery, letter.reason, reason: letter.detail) }
        case .clearMarkers(let keys):
            for key in keys { try? await store.clearAttempt(key: key) }
        case .requeue(let indices):
            // `basic.reject`, not `basic.nack`: RabbitMQ 3.10 counts both, 4.3 no longer counts a
            // nack, and the count is what brings a command to its last delivery the same way on both.
            for index in indices { await consumer.reject(machine.items[index].delivery.tag, requeue: true) }
            trackUnacked(-indices.count)
            logger.error("commands returned to the queue", metadata: ["batch.size": "\(indices.count)"])
            traces?.settle(indices.map { machine.items[$0].delivery.tag }, .returned)
        case .forget(let indices):
            trackUnacked(-indices.count)
            traces?.settle(indices.map { machine.items[$0].delivery.tag }, .leftToRedelivery)
            logger.notice("not replying to commands whose channel closed meanwhile; their redeliveries will", metadata: [
                "batch.size": "\(indices.count)",
            ])
        case .settleHandBack(let acked, let requeued, let stale):
            for index in acked { await consumer.ack(machine.items[index].delivery.tag) }
            for index in requeued { await consumer.reject(machine.items[index].delivery.tag, requeue: true) }
            let taken = (acked + requeued + stale).filter { machine.items[$0].taken }
            trackUnacked(-taken.count)
            metrics.handedBack.increment(by: acked.count)
            logger.warning("commands handed back to the queue", metadata: [
                "batch.size": "\(acked.count)", "requeued": "\(requeued.count)", "left_to_redelivery": "\(stale.count)",
            ])
            traces?.settle(taken.map { machine.items[$0].delivery.tag }, .returned)
        }
    }

    /// The hand-back's steps that need an answer, in either phase.
    private func handBack<Action: BatchAction>(_ step: BatchMachine.HandBackStep, _ machine: inout BatchMachine) async -> Action {
        switch step {
        case .askGeneration:
            return machine.handBackGeneration(liveGeneration)
        case .publishCopies(let indices):
            // Each copy goes to the command queue through the default exchange (so no other queue
            // bound to the command exchange gets one), with publisher confirms (`DeliveryFate`).
            let copies = indices.map { machine.items[$0].delivery.handBackCopy(fallbackQueue: configuration.names.commandQueue) }
            var outcomes: [PublishOutcome?] = Array(repeating: nil, count: copies.count)
            if !copies.isEmpty {
                do {
                    outcomes = try await publisher.publish(copies, timeout: configuration.confirmTimeout).map { Optional($0) }
                } catch {
                    logger.error("handing commands back failed; they are requeued instead", metadata: [
                        "batch.size": "\(copies.count)", "error": "\(error)",
                    ])
                }
            }
            return machine.copiesPublished(outcomes)
        }
    }

    /// The consumer's connection generation while it is connected; nil while it is not (lost or
    /// reconnecting): the deliveries of its last channel are back in the queue then, though the
    /// session reports that channel's generation until it has reconnected.
    private var liveGeneration: UInt64? {
        let status = consumer.status
        return status.state.isConnected ? status.generation : nil
    }

    /// Reports a failed store operation to the machine: cancellation as shutdown, anything else
    /// classified by the store's table; counted, and recorded on the transaction's span.
    private func storeFailed(_ machine: inout BatchMachine, _ error: any Error, span: (any Span)?) -> BatchMachine.StoreAction {
        if Task.isCancelled || error is CancellationError { return machine.shutdown() }
        span?.recordError(error)
        let failure = store.classify(error)
        let action = machine.storeFailed(failure, error: "\(error)", now: .now)
        switch action {
        case .pause(.conflict):
            break
        case .pause, .stopConsuming:
            metrics.storeFailures.increment()
            setPaused(true)
        default:
            span?.setStatus(SpanStatus(code: .error, message: "\(failure.kind.rawValue) \(failure.code)"))
        }
        return action
    }

    private func noteStoreAnswered(_ machine: BatchMachine, operation: String) {
        guard let since = machine.pausedSince else { return }
        logger.notice("database available again; resuming", metadata: [
            "operation": "\(operation)", "paused.seconds": "\((ContinuousClock.now - since).components.seconds)",
        ])
    }

    private func logPause(_ pause: BatchMachine.Pause) {
        guard case .store(let operation, let attempt, let batchSize, let failure, let unclassified, let error, _) = pause else { return }
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
    }

    /// After a hand-back: waits for the store to answer (probing it with backoff, not ready
    /// meanwhile), then consumes again. Graceful shutdown ends the wait.
    private func consumeAgainOnceTheStoreAnswers() async throws {
        setPaused(true)
        defer { setPaused(false) }
        let since = ContinuousClock.now
        var attempt = 0
        while true {
            do {
                try await store.checkWritable()
                break
            } catch {
                if Task.isCancelled || error is CancellationError { return }
                attempt += 1
                metrics.storeFailures.increment()
                let failure = store.classify(error)
                let pause = BatchMachine.Pause.store(operation: "database check", attempt: attempt, batchSize: 0, failure: failure,
                                                     unclassified: failure.kind == .unknown, error: "\(error)",
                                                     notAfter: .now + configuration.storeRetryBackoff.maximumDelay)
                logPause(pause)
                if await pacer.wait(pause, health: health) { return }
            }
        }
        if attempt > 0 {
            logger.notice("database available again; resuming", metadata: [
                "operation": "database check", "attempt": "\(attempt + 1)", "paused.seconds": "\((ContinuousClock.now - since).components.seconds)",
            ])
        }
        try await consumeCommandQueues()
        health.setConsuming(true)
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

    private func incoming(_ delivery: Delivery) -> IncomingCommand {
        IncomingCommand(apiKey: delivery.properties.headers["x-api-key"]?.stringValue, contentType: delivery.properties.contentType,
                        body: delivery.body, headersTooDeep: delivery.properties.headersTooDeep)
    }

    /// Rejects a delivery without requeueing it: the queue dead-letters it.
    private func deadLetter(_ delivery: Delivery, _ reason: WorkerMetrics.DeadLetterReason, reason detail: String) async {
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
    }

    private func setPaused(_ value: Bool) {
        health.setPaused(value)
        metrics.paused.record(value ? 1 : 0)
    }

    private func trackUnacked(_ change: Int) {
        let now = unacked.add(change, ordering: .relaxed).newValue
        metrics.unacked.record(now)
    }

    private func logBatch(_ answered: [BatchMachine.Item]) {
        guard logger.logLevel <= .debug else { return }
        for item in answered {
            guard let reply = item.reply else { continue }
            ServiceContext.withValue(traces?.context(item.delivery.tag)) {
                logger.debug("command handled", metadata: [
                    "command.message_id": "\(item.delivery.properties.messageID ?? "")",
                    "reply.type": "\(reply.type.rawValue)",
                    "reply.code": "\(reply.errorCode ?? "none")",
                    "reply.replayed": "\(reply.replayed)",
                    "delivery.redelivered": "\(item.delivery.redelivered)",
                ])
            }
        }
    }
}
