import AMQP
import CreateCustomer
import Foundation
import Logging
import Metrics
import Observability
import Synchronization
import Tracing
import WorkerTracing

/// Executes each batch's `BatchMachine`: feeds it what the store, the broker and the clock
/// answer, and does what its actions say (store, publish, pause, hand back, dead-letter, requeue,
/// acknowledge). It decides nothing: every decision is the machine's, every wait `Pacer`'s, the
/// replies `ReplyPublisher`'s. `CommandWorker` takes the batches and runs each through here, the
/// store phase in its consume loop and the publish phase in a child task.
final class BatchExecutor: Sendable {
    let metrics: WorkerMetrics
    private let configuration: WorkerConfiguration
    private let store: any CustomerStorage
    private let consumer: AMQPSession
    private let publisher: AMQPSession
    private let logger: Logger
    private let laneMetrics: FairShareMetrics
    /// Spans of the commands in hand; nil while tracing is off, so nothing is spent on them.
    private let traces: CommandTraces?
    private let health: WorkerHealth
    private let pacer: Pacer
    private let rules: BatchMachine.Rules
    /// Deliveries taken and not yet acknowledged or returned.
    private let unacked = Atomic<Int>(0)
    private let replyPublisher: ReplyPublisher

    init(configuration: WorkerConfiguration, store: any CustomerStorage, consumer: AMQPSession, publisher: AMQPSession,
         metrics: WorkerMetrics, traces: CommandTraces?, health: WorkerHealth, replyPublisher: ReplyPublisher, logger: Logger) {
        self.configuration = configuration
        self.store = store
        self.consumer = consumer
        self.publisher = publisher
        self.metrics = metrics
        self.traces = traces
        self.health = health
        self.replyPublisher = replyPublisher
        self.logger = logger
        laneMetrics = FairShareMetrics(configuration.fairShare)
        pacer = Pacer(storeRetry: configuration.storeRetryBackoff, publishRetry: configuration.transientBackoff)
        rules = BatchMachine.Rules(deliveryLimit: configuration.deliveryLimit, transientAttempts: configuration.transientAttempts,
                                   handBackAfter: configuration.handBackAfter)
    }

    /// A batch taken from the queue: counted, traced, and its machine.
    func begin(_ deliveries: [Delivery]) -> BatchMachine {
        traces?.received(deliveries)
        metrics.received.increment(by: deliveries.count)
        laneMetrics.record(deliveries)
        metrics.batchSize.record(deliveries.count)
        trackUnacked(deliveries.count)
        return BatchMachine(deliveries, rules: rules, publisherUser: publisher.configuration.user)
    }

    /// Executes the machine's store-phase actions until the phase is over; true when it stopped
    /// consuming (the hand-back) and the worker must wait for the store before consuming again.
    func runStorePhase(_ machine: inout BatchMachine) async -> Bool {
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
    func runPublishPhase(_ stored: BatchMachine, received: ContinuousClock.Instant) async {
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

    /// After a hand-back: waits for the store to answer, probing it with backoff (paused, so not
    /// ready, meanwhile); true once it answered, false when the worker is stopping (graceful
    /// shutdown ends the wait).
    func waitForTheStore() async -> Bool {
        setPaused(true)
        defer { setPaused(false) }
        let since = ContinuousClock.now
        var attempt = 0
        while true {
            do {
                try await store.checkWritable()
                break
            } catch {
                if Task.isCancelled || error is CancellationError { return false }
                attempt += 1
                metrics.storeFailures.increment()
                let failure = store.classify(error)
                let pause = BatchMachine.Pause.store(operation: "database check", attempt: attempt, batchSize: 0, failure: failure,
                                                     unclassified: failure.kind == .unknown, error: "\(error)",
                                                     notAfter: .now + configuration.storeRetryBackoff.maximumDelay)
                logPause(pause)
                if await pacer.wait(pause, health: health) { return false }
            }
        }
        if attempt > 0 {
            logger.notice("database available again; resuming", metadata: [
                "operation": "database check", "attempt": "\(attempt + 1)", "paused.seconds": "\((ContinuousClock.now - since).components.seconds)",
            ])
        }
        return true
    }

    private func incoming(_ delivery: Delivery) -> IncomingCommand {
        delivery.withProperties { properties in
            IncomingCommand(apiKey: properties.headers["x-api-key"]?.stringValue, contentType: properties.contentType,
                            body: delivery.body, headersTooDeep: properties.headersTooDeep)
        }
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
