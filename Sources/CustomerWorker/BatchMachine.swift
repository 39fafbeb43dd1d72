import AMQP
import CreateCustomer

/// One batch's life, as a pure state machine in the style of postgres-nio's
/// `ConnectionStateMachine`: a value holding each delivery's phase, fed every event that happens
/// to the batch, answering each with the one action to execute next, typed by phase (`StoreAction`,
/// `PublishAction`). It decides everything the
/// worker does with a batch (which deliveries get markers, when to pause, hand back, requeue,
/// dead-letter or ack); the rules it applies, one event at a time, are `DeliveryFate`'s table.
/// `CommandWorker` only executes the actions and reports what came of them. No I/O, no clock
/// (instants come with the events), no randomness: `BatchMachineTests` drives whole sequences.
///
/// Invariants, by construction:
/// - an ack covers only deliveries whose events copy the broker confirmed (or returned);
/// - a delivery is dead-lettered only when its own transaction, its own reply or its own
///   markers say so, never because the store is unavailable or the worker stops;
/// - a delivery whose marker is committed and whose work is not is never requeued: when it must
///   go back (shutdown while the database fails, the hand-back), it is handed back, and its copy
///   arrives as a first delivery, which commits no marker. So a graceful stop never leaves a
///   marker that a later attempt counts on top of its own: only a crash does.
///
/// Impossible events (an answer to an action that was not asked for) trap.
struct BatchMachine: Sendable {
    struct Rules: Sendable, Equatable {
        var deliveryLimit: Int
        var transientAttempts: Int
        var handBackAfter: Duration
    }

    enum Phase: Sendable, Equatable {
        case received
        /// Its marker is being committed.
        case marking
        /// In a work transaction.
        case storing
        /// Its transaction committed; its reply waits to be published.
        case stored(ReplyRecord)
        /// Its events copy is being published (attempt `n`).
        case publishing(attempt: Int)
        /// The broker took its events copy (confirmed, or returned when nothing is bound).
        case confirmed
        case acked
        case deadLettered(WorkerMetrics.DeadLetterReason)
        case requeued
        case handedBack
        /// Its channel closed since its delivery: the broker redelivers it.
        case forgotten
    }

    struct Item: Sendable {
        let delivery: Delivery
        /// Whether the worker counted it as in hand (prefetched ones returned by a stop are not).
        let taken: Bool
        /// Whether a copy can carry it unchanged (`Delivery.canBeHandedBack`).
        let copyable: Bool
        /// The key of its handling-attempt marker, derived when a marker is written or cleared
        /// (redeliveries only): hashing every command's body for it cost ~7,000 instructions each.
        var markerKey: String {
            HandlingAttempt.key(apiKey: delivery.properties.headers["x-api-key"]?.stringValue,
                                messageID: delivery.properties.messageID, body: delivery.body)
        }
        var phase: Phase = .received
        /// A marker of this attempt is committed and its work transaction has not committed.
        var markerCommitted = false
        var reply: ReplyRecord?
        var unpublishable: String?

        var isSettled: Bool {
            switch phase {
            case .acked, .deadLettered, .requeued, .handedBack, .forgotten: true
            default: false
            }
        }
    }

    struct DeadLetter: Sendable, Equatable {
        var item: Int
        var reason: WorkerMetrics.DeadLetterReason
        var detail: String
    }

    /// What a pause waits for.
    enum Pause: Sendable, Equatable {
        /// The store failed: retry `operation` (`attempt` failed so far), not after `notAfter`
        /// (when the oldest command held is due to be handed back).
        case store(operation: String, attempt: Int, batchSize: Int, failure: StoreFailure, unclassified: Bool, error: String,
                   notAfter: ContinuousClock.Instant)
        /// The work collided with another transaction (`attempt` times in a row): run it again
        /// after a few milliseconds.
        case conflict(attempt: Int)
        /// Publishing failed; publish again before attempt `attempt`.
        case publish(attempt: Int)
        /// After giving a batch back: its redeliveries are not taken at once.
        case afterGiveBack
    }

    /// The machine's own vocabulary: everything it can ask for, in either phase. The events answer
    /// with the phase's typed action instead (`StoreAction`, `PublishAction`), so an executor
    /// handles exactly what its phase can ask for; a step outside the phase traps here.
    enum Step: Sendable, Equatable {
        /// Commit a handling-attempt marker for this redelivered item.
        case beginAttempt(item: Int, key: String)
        /// One work transaction for these items, removing the markers `finishingAttempts` first.
        case store(items: [Int], finishingAttempts: [String])
        case deadLetter([DeadLetter])
        case clearMarkers([String])
        case pause(Pause)
        /// Stop consuming and report the prefetched deliveries (`consumingStopped`).
        case stopConsuming
        /// Hand these back: report the consumer's connection generation (`handBackGeneration`).
        case handBack([Int])
        /// Publish a copy of each of these to the command queue, with confirms.
        case publishCopies([Int])
        /// Ack each handed-back original whose copy was confirmed; nack (requeue) the others.
        /// `stale`: deliveries of an earlier connection, left to the broker's redelivery.
        case settleHandBack(ack: [Int], requeue: [Int], stale: [Int])
        /// `basic.reject` with requeue, one by one.
        case requeue([Int])
        /// Its channel closed: these will be redelivered; nothing more to do for them.
        case forget([Int])
        /// Publish the events copies of `events` and, on the first attempt only, the `reply_to`
        /// copies of `copies`.
        case publish(events: [Int], copies: [Int], attempt: Int)
        /// Ack exactly `items` (all confirmed).
        case ack(items: [Int])
        /// The store phase is over: publish the stored replies (`startPublishing`); with
        /// `awaitStore`, the worker stopped consuming and waits for the store before consuming again.
        case storePhaseOver(awaitStore: Bool)
        /// Nothing more for this batch.
        case finished
    }

    /// A side effect either phase may ask for; each is answered by `executed()`.
    enum Effect: Sendable, Equatable {
        case deadLetter([DeadLetter])
        case clearMarkers([String])
        /// `basic.reject` with requeue, one by one.
        case requeue([Int])
        /// Its channel closed: these will be redelivered; nothing more to do for them.
        case forget([Int])
        /// Ack each handed-back original whose copy was confirmed; requeue the others.
        /// `stale`: deliveries of an earlier connection, left to the broker's redelivery.
        case settleHandBack(ack: [Int], requeue: [Int], stale: [Int])
    }

    /// The hand-back's steps that need an answer of their own (either phase may hand back).
    enum HandBackStep: Sendable, Equatable {
        /// Hand these back: answer with the consumer's live connection generation (`handBackGeneration`).
        case askGeneration([Int])
        /// Publish a copy of each of these to the command queue, with confirms; answer with
        /// what the broker said of each (`copiesPublished`).
        case publishCopies([Int])
    }

    /// What the store phase asks the executor for.
    enum StoreAction: Sendable, Equatable {
        /// Commit a handling-attempt marker for this redelivered item; answer `attemptCounted` or `storeFailed`.
        case beginAttempt(item: Int, key: String)
        /// One work transaction for these items, removing the markers `finishingAttempts` first;
        /// answer `stored` or `storeFailed`.
        case store(items: [Int], finishingAttempts: [String])
        /// Wait, then answer `tick`, or `shutdown` when the wait was cut short.
        case pause(Pause)
        /// Stop consuming; answer `consumingStopped` with the prefetched deliveries.
        case stopConsuming
        case effect(Effect)
        case handBack(HandBackStep)
        /// The store phase is over: publish the stored replies (`startPublishing`); with
        /// `awaitStore`, the worker stopped consuming and waits for the store before consuming again.
        case storePhaseOver(awaitStore: Bool)
    }

    /// What the publish phase asks the executor for.
    enum PublishAction: Sendable, Equatable {
        /// Publish the events copies of `events` and, on the first attempt only, the `reply_to`
        /// copies of `copies`; answer `published` or `publishFailed`.
        case publish(events: [Int], copies: [Int], attempt: Int)
        /// Wait, then answer `tick`, or `shutdown` when the wait was cut short.
        case pause(Pause)
        /// Ack exactly `items` (all confirmed); answer `executed`.
        case ack(items: [Int])
        case effect(Effect)
        case handBack(HandBackStep)
        /// Nothing more for this batch.
        case finished
    }

    private enum Mode: Sendable, Equatable {
        case batch
        case oneByOne(marking: Bool)
    }

    /// What the machine waits for: the answer to the last action it gave.
    private enum Awaiting: Sendable, Equatable {
        case start
        case attemptCounted(Int)
        case stored([Int])
        case paused(retrying: Step)
        case executed
        case consumingStopped
        case handBackGeneration
        case copiesPublished([Int])
        case storePhaseOver
        case published(events: [Int], attempt: Int)
        case publishPaused(attempt: Int)
        case finished
    }

    let rules: Rules
    private(set) var items: [Item]
    private var mode: Mode = .batch
    private var awaiting: Awaiting = .start
    /// Actions decided and not given yet (side effects queued before the next operation).
    private var queued: [Step] = []
    private var storeAttempts = 0
    /// Collisions in a row of the operation in hand.
    private var conflicts = 0
    /// When the store began failing for the operation in hand; nil while it answers.
    private(set) var pausedSince: ContinuousClock.Instant?
    /// The store phase ends by handing back and waiting for the store.
    private var awaitStore = false
    private var inPublishPhase = false
    /// Graceful shutdown (or cancellation) came in the store phase.
    private(set) var shuttingDown = false

    init(_ deliveries: [Delivery], rules: Rules, publisherUser: String) {
        self.rules = rules
        items = deliveries.map { delivery in
            Item(delivery: delivery, taken: true, copyable: delivery.canBeHandedBack(publishingAs: publisherUser))
        }
    }

    // MARK: Events

    /// The batch arrived.
    private mutating func startStep() -> Step {
        expect(.start)
        if case .oneByOne(let mark) = DeliveryFate.received(anyRedelivered: items.contains(where: \.delivery.redelivered)) {
            mode = .oneByOne(marking: mark)
            return advance()
        }
        return storeAll()
    }

    /// A marker was committed; `earlier` unfinished attempts were counted before it.
    private mutating func attemptCountedStep(earlierUnfinished earlier: Int) -> Step {
        guard case .attemptCounted(let index) = awaiting else { impossible("attemptCounted") }
        leavePause()
        items[index].markerCommitted = true
        switch DeliveryFate.attemptCounted(earlierUnfinished: earlier) {
        case .deadLetter(let reason, let detail):
            deadLetter(index, reason, detail)
            return advance()
        case .store:
            return store([index])
        }
    }

    /// The work transaction committed with one outcome per item stored.
    private mutating func storedStep(_ outcomes: [CommandOutcome]) -> Step {
        guard case .stored(let indices) = awaiting, outcomes.count == indices.count else { impossible("stored") }
        leavePause()
        for (index, outcome) in zip(indices, outcomes) {
            items[index].markerCommitted = false  // the work transaction removed it
            switch DeliveryFate.stored(outcome) {
            case .publish(let reply):
                items[index].phase = .stored(reply)
                items[index].reply = reply
            case .deadLetter(let reason, let detail):
                deadLetter(index, reason, detail)
            }
        }
        return advance()
    }

    /// The store operation in hand failed; `now` is when.
    private mutating func storeFailedStep(_ failure: StoreFailure, error: String, now: ContinuousClock.Instant) -> Step {
        let indices: [Int]
        let operation: String
        let retrying: Step
        switch awaiting {
        case .attemptCounted(let index):
            (indices, operation, retrying) = ([index], "record a handling attempt", .beginAttempt(item: index, key: items[index].markerKey))
        case .stored(let stored):
            (indices, operation, retrying) = (stored, "database transaction", .store(items: stored, finishingAttempts: finishing(stored)))
        default:
            impossible("storeFailed")
        }
        if failure.kind == .conflict {
            conflicts += 1
            if DeliveryFate.conflicted(attempt: conflicts) == .storeAgain {
                awaiting = .paused(retrying: retrying)
                return .pause(.conflict(attempt: conflicts))
            }
        }
        switch DeliveryFate.storeFailed(failure, commands: indices.count, error: error) {
        case .storeOneByOne:
            leavePause()
            for index in indices { items[index].phase = .received }
            mode = .oneByOne(marking: false)
            return advance()
        case .deadLetter(let reason, let detail):
            leavePause()
            let index = indices[0]
            if case .attemptCounted = awaiting {
                // The marker could not be written for a reason of its own: the command is stored unmarked.
                return store([index])
            }
            deadLetter(index, reason, detail)
            return advance()
        case .pauseAndRetry(let unclassified):
            storeAttempts += 1
            pausedSince = pausedSince ?? now
            let heldSince = items.filter { !$0.isSettled }.map(\.delivery.receivedAt).min() ?? now
            let handBackAt = heldSince + rules.handBackAfter
            if DeliveryFate.storeStillFailing(heldFor: now - heldSince, handBackAfter: rules.handBackAfter) == .handBack {
                leavePause()
                for index in indices where items[index].phase == .storing || items[index].phase == .marking { items[index].phase = .received }
                awaitStore = true
                awaiting = .consumingStopped
                return .stopConsuming
            }
            awaiting = .paused(retrying: retrying)
            return .pause(.store(operation: operation, attempt: storeAttempts, batchSize: indices.count, failure: failure,
                                 unclassified: unclassified, error: error, notAfter: handBackAt))
        }
    }

    /// A pause ended on time.
    private mutating func tickStep() -> Step {
        switch awaiting {
        case .paused(let retrying):
            switch retrying {
            case .beginAttempt(let index, _): awaiting = .attemptCounted(index)
            case .store(let indices, _): awaiting = .stored(indices)
            default: impossible("retrying \(retrying)")
            }
            return retrying
        case .publishPaused(let attempt):
            return publishPending(attempt: attempt)
        case .executed:
            return advance()
        default:
            impossible("tick")
        }
    }

    /// Graceful shutdown (or cancellation) came while the machine waited in a pause. In the store
    /// phase, everything in hand goes back (`giveBack`); in the publish phase, cancellation ends
    /// the attempts: the batch goes back.
    private mutating func shutdownStep() -> Step {
        switch awaiting {
        case .paused, .attemptCounted, .stored:
            leavePause()
            shuttingDown = true
            for index in items.indices where items[index].phase == .storing || items[index].phase == .marking { items[index].phase = .received }
            if items.contains(where: { !$0.isSettled && mustBeHandedBack($0) }) {
                // Consuming stops first, so a copy handed back is not delivered to this worker,
                // which would return it as a redelivery when its channel closes.
                awaiting = .consumingStopped
                return .stopConsuming
            }
            giveBack(items.indices.filter { !items[$0].isSettled })
            queued.append(.storePhaseOver(awaitStore: false))
            awaiting = .executed
            return next()
        case .publishPaused:
            return publishFailedStep(cancelled: true)
        default:
            return tickStep()  // the pause after a give-back: nothing more is held
        }
    }

    /// The last side effect (dead-letter, requeue, clear, settle, forget, pause after a give-back) was executed.
    private mutating func executedStep() -> Step {
        expect(.executed)
        return advance()
    }

    /// The consumer stopped; `prefetched` are the deliveries it held and never handed out.
    private mutating func consumingStoppedStep(prefetched: [Delivery], publisherUser: String) -> Step {
        expect(.consumingStopped)
        if shuttingDown {
            // The prefetched go back when the channel closes, as at any shutdown.
            giveBack(items.indices.filter { !items[$0].isSettled })
            queued.append(.storePhaseOver(awaitStore: false))
            awaiting = .executed
            return next()
        }
        for delivery in prefetched {
            items.append(Item(delivery: delivery, taken: false, copyable: delivery.canBeHandedBack(publishingAs: publisherUser)))
        }
        let held = items.indices.filter { !items[$0].isSettled && items[$0].reply == nil }
        queued.append(.handBack(held))
        queued.append(.storePhaseOver(awaitStore: true))
        awaiting = .executed
        return next()
    }

    /// The consumer's live connection generation, asked for by `.handBack`; nil while the consumer
    /// is not connected (the broker has requeued what its lost channel held).
    private mutating func handBackGenerationStep(_ generation: UInt64?) -> Step {
        guard case .handBackGeneration = awaiting, case .handBack(let indices)? = pendingHandBack else { impossible("handBackGeneration") }
        pendingHandBack = nil
        let stale = indices.filter { items[$0].delivery.tag.connectionGeneration != generation }
        let current = indices.filter { items[$0].delivery.tag.connectionGeneration == generation }
        let copies = current.filter { items[$0].copyable }
        handBackRequeue = current.filter { !items[$0].copyable }
        handBackStale = stale
        awaiting = .copiesPublished(copies)
        return .publishCopies(copies)
    }

    /// What the broker said of each copy (nil: publishing them failed).
    private mutating func copiesPublishedStep(_ outcomes: [PublishOutcome?]) -> Step {
        guard case .copiesPublished(let copies) = awaiting, outcomes.count == copies.count else { impossible("copiesPublished") }
        var acked: [Int] = []
        var requeued = handBackRequeue
        for (index, outcome) in zip(copies, outcomes) {
            if DeliveryFate.handedBack(outcome) == .ackOriginal { acked.append(index) } else { requeued.append(index) }
        }
        for index in acked { items[index].phase = .handedBack }
        for index in requeued { items[index].phase = .requeued }
        for index in handBackStale { items[index].phase = .forgotten }
        let stale = handBackStale
        handBackRequeue = []
        handBackStale = []
        awaiting = .executed
        return .settleHandBack(ack: acked, requeue: requeued, stale: stale)
    }

    /// The worker starts publishing the stored replies; `generation` is the consumer's live
    /// connection generation, nil while it is not connected (its channel is gone, so the broker
    /// has requeued every delivery it held, whatever the generation the session reports).
    private mutating func startPublishingStep(generation: UInt64?) -> Step {
        expect(.storePhaseOver)
        inPublishPhase = true
        let stale = items.indices.filter { items[$0].reply != nil && !items[$0].isSettled && items[$0].delivery.tag.connectionGeneration != generation }
        if !stale.isEmpty {
            // The broker has requeued these; their redeliveries replay the stored replies.
            for index in stale { items[index].phase = .forgotten }
            queued.append(.forget(stale))
        }
        awaiting = .executed
        return advance()
    }

    /// The broker's answers to the events copies of the last `.publish` (in its order).
    private mutating func publishedStep(_ outcomes: [PublishOutcome]) -> Step {
        guard case .published(let events, let attempt) = awaiting, outcomes.count == events.count else { impossible("published") }
        for (index, outcome) in zip(events, outcomes) {
            switch DeliveryFate.eventsCopy(outcome) {
            case .ack, .ackReturned:
                items[index].phase = .confirmed
            case .publishAgain:
                continue
            case .deadLetter(_, let detail):
                items[index].phase = .confirmed  // settled below, never acked
                items[index].unpublishable = detail
            }
        }
        if events.contains(where: { items[$0].phase == .publishing(attempt: attempt) }) {
            return publishFailedStep(cancelled: false)
        }
        return advance()
    }

    /// Publishing failed as a whole, or some events copies were nacked; `cancelled`: the worker
    /// is being cancelled, so no attempt is left.
    private mutating func publishFailedStep(cancelled: Bool) -> Step {
        let attempt: Int
        switch awaiting {
        case .published(_, let current): attempt = current
        case .publishPaused(let next): attempt = next - 1
        default: impossible("publishFailed")
        }
        let exhausted = cancelled || DeliveryFate.publishFailed(attempt: attempt, limit: rules.transientAttempts) == .giveBack
        if exhausted {
            giveBack(items.indices.filter { items[$0].reply != nil && !items[$0].isSettled })
            queued.append(.pause(.afterGiveBack))
            queued.append(.finished)
            awaiting = .executed
            return next()
        }
        awaiting = .publishPaused(attempt: attempt + 1)
        return .pause(.publish(attempt: attempt))
    }

    var isFinished: Bool { awaiting == .finished }

    /// Whether the store phase left replies to publish.
    var hasReplies: Bool { items.contains { $0.reply != nil && !$0.isSettled } }

    // MARK: Decisions

    private var pendingHandBack: Step?
    private var handBackRequeue: [Int] = []
    private var handBackStale: [Int] = []

    /// The next action: queued side effects first, then the next operation of the phase.
    private mutating func advance() -> Step {
        if !queued.isEmpty { return next() }
        if !inPublishPhase {
            if case .oneByOne(let marking) = mode, let index = items.indices.first(where: { items[$0].phase == .received && items[$0].taken }) {
                if marking && items[index].delivery.redelivered && !items[index].markerCommitted {
                    items[index].phase = .marking
                    awaiting = .attemptCounted(index)
                    return .beginAttempt(item: index, key: items[index].markerKey)
                }
                return store([index])
            }
            awaiting = .storePhaseOver
            return .storePhaseOver(awaitStore: false)
        }
        let pending = items.indices.filter { items[$0].reply != nil && !items[$0].isSettled && items[$0].phase != .confirmed }
        if !pending.isEmpty {
            if pending.contains(where: { if case .publishing = items[$0].phase { true } else { false } }) {
                impossible("advance while publishing")
            }
            return publishPending(attempt: 1)
        }
        let unpublishable = items.indices.filter { items[$0].phase == .confirmed && items[$0].unpublishable != nil }
        if !unpublishable.isEmpty {
            // A reply that can never be published is its command's own failure: that command alone
            // is dead-lettered, before the ack (which must not cover it).
            for index in unpublishable { deadLetter(index, .failed, items[index].unpublishable ?? "") }
            return next()
        }
        let confirmed = items.indices.filter { items[$0].phase == .confirmed }
        if !confirmed.isEmpty {
            for index in confirmed { items[index].phase = .acked }
            awaiting = .executed
            queued.append(.finished)
            return .ack(items: confirmed)
        }
        awaiting = .finished
        return .finished
    }

    private mutating func next() -> Step {
        let step = queued.removeFirst()
        switch step {
        case .handBack:
            pendingHandBack = step
            awaiting = .handBackGeneration
        case .storePhaseOver:
            awaiting = .storePhaseOver
        case .finished:
            awaiting = .finished
        default:
            awaiting = .executed
        }
        return step
    }

    private mutating func publishPending(attempt: Int) -> Step {
        let events = items.indices.filter { items[$0].reply != nil && !items[$0].isSettled && items[$0].phase != .confirmed }
        for index in events { items[index].phase = .publishing(attempt: attempt) }
        awaiting = .published(events: events, attempt: attempt)
        // reply_to copies get one attempt only: best effort, never repeated.
        return .publish(events: events, copies: attempt == 1 ? events : [], attempt: attempt)
    }

    private mutating func storeAll() -> Step {
        store(items.indices.filter { items[$0].taken })
    }

    private mutating func store(_ indices: [Int]) -> Step {
        for index in indices { items[index].phase = .storing }
        awaiting = .stored(indices)
        return .store(items: indices, finishingAttempts: finishing(indices))
    }

    private func finishing(_ indices: [Int]) -> [String] {
        indices.filter { items[$0].markerCommitted }.map { items[$0].markerKey }
    }

    private mutating func deadLetter(_ index: Int, _ reason: WorkerMetrics.DeadLetterReason, _ detail: String) {
        items[index].phase = .deadLettered(reason)
        let letter = DeadLetter(item: index, reason: reason, detail: detail)
        if case .deadLetter(let letters)? = queued.last {
            queued[queued.count - 1] = .deadLetter(letters + [letter])
        } else {
            queued.append(.deadLetter([letter]))
        }
        if items[index].markerCommitted {
            items[index].markerCommitted = false
            queued.append(.clearMarkers([items[index].markerKey]))
        }
    }

    /// Returns deliveries to the queue: requeued, except those a requeue could dead-letter (at
    /// their last delivery) and those whose marker is committed and whose work is not, which are
    /// handed back (`DeliveryFate`).
    private mutating func giveBack(_ indices: [Int]) {
        guard !indices.isEmpty else { return }
        var requeued: [Int] = []
        var handedBack: [Int] = []
        for index in indices {
            if mustBeHandedBack(items[index]) { handedBack.append(index) } else { requeued.append(index) }
        }
        for index in requeued { items[index].phase = .requeued }
        if !handedBack.isEmpty { queued.append(.handBack(handedBack)) }
        if !requeued.isEmpty { queued.append(.requeue(requeued)) }
    }

    /// Whether a requeue is not allowed for this item: at its last delivery (a requeue could
    /// dead-letter it, stored or not), or with its marker committed and its work not (its
    /// redelivery would count that marker on top of its own).
    private func mustBeHandedBack(_ item: Item) -> Bool {
        DeliveryFate.returning(deliveryCount: item.delivery.deliveryCount, limit: rules.deliveryLimit) == .handBack
            || item.markerCommitted
    }

    private mutating func leavePause() {
        pausedSince = nil
        storeAttempts = 0
        conflicts = 0
    }

    private func expect(_ state: Awaiting) {
        guard awaiting == state else { impossible("expected \(state), awaiting \(awaiting)") }
    }

    private func impossible(_ event: String, file: StaticString = #file, line: UInt = #line) -> Never {
        preconditionFailure("BatchMachine: impossible event \(event) while awaiting \(awaiting)", file: file, line: line)
    }
}

/// A phase's typed action: `StoreAction` or `PublishAction`.
protocol BatchAction: Sendable, Equatable {
    /// Whether this is the publish phase's type.
    static var isPublishPhase: Bool { get }
    /// The action for `step`; nil when this phase cannot ask for it.
    init?(_ step: BatchMachine.Step)
}

extension BatchMachine.Step {
    var effect: BatchMachine.Effect? {
        switch self {
        case .deadLetter(let letters): .deadLetter(letters)
        case .clearMarkers(let keys): .clearMarkers(keys)
        case .requeue(let indices): .requeue(indices)
        case .forget(let indices): .forget(indices)
        case .settleHandBack(let acked, let requeued, let stale): .settleHandBack(ack: acked, requeue: requeued, stale: stale)
        default: nil
        }
    }

    var handBackStep: BatchMachine.HandBackStep? {
        switch self {
        case .handBack(let indices): .askGeneration(indices)
        case .publishCopies(let indices): .publishCopies(indices)
        default: nil
        }
    }
}

extension BatchMachine.StoreAction: BatchAction {
    static var isPublishPhase: Bool { false }

    init?(_ step: BatchMachine.Step) {
        if let effect = step.effect { self = .effect(effect); return }
        if let handBack = step.handBackStep { self = .handBack(handBack); return }
        switch step {
        case .beginAttempt(let item, let key): self = .beginAttempt(item: item, key: key)
        case .store(let items, let finishing): self = .store(items: items, finishingAttempts: finishing)
        case .pause(let pause): self = .pause(pause)
        case .stopConsuming: self = .stopConsuming
        case .storePhaseOver(let awaitStore): self = .storePhaseOver(awaitStore: awaitStore)
        default: return nil
        }
    }
}

extension BatchMachine.PublishAction: BatchAction {
    static var isPublishPhase: Bool { true }

    init?(_ step: BatchMachine.Step) {
        if let effect = step.effect { self = .effect(effect); return }
        if let handBack = step.handBackStep { self = .handBack(handBack); return }
        switch step {
        case .publish(let events, let copies, let attempt): self = .publish(events: events, copies: copies, attempt: attempt)
        case .pause(let pause): self = .pause(pause)
        case .ack(let items): self = .ack(items: items)
        case .finished: self = .finished
        default: return nil
        }
    }
}

// MARK: Events, answered with the phase's typed action

extension BatchMachine {
    /// The batch arrived.
    mutating func start() -> StoreAction {
        let step = startStep()
        return typed(step)
    }

    /// A marker was committed; `earlier` unfinished attempts were counted before it.
    mutating func attemptCounted(earlierUnfinished earlier: Int) -> StoreAction {
        let step = attemptCountedStep(earlierUnfinished: earlier)
        return typed(step)
    }

    /// The work transaction committed with one outcome per item stored.
    mutating func stored(_ outcomes: [CommandOutcome]) -> StoreAction {
        let step = storedStep(outcomes)
        return typed(step)
    }

    /// The store operation in hand failed; `now` is when.
    mutating func storeFailed(_ failure: StoreFailure, error: String, now: ContinuousClock.Instant) -> StoreAction {
        let step = storeFailedStep(failure, error: error, now: now)
        return typed(step)
    }

    /// The consumer stopped; `prefetched` are the deliveries it held and never handed out.
    mutating func consumingStopped(prefetched: [Delivery], publisherUser: String) -> StoreAction {
        let step = consumingStoppedStep(prefetched: prefetched, publisherUser: publisherUser)
        return typed(step)
    }

    /// The worker starts publishing the stored replies; `generation`: the consumer's live
    /// connection generation, nil while it is not connected.
    mutating func startPublishing(generation: UInt64?) -> PublishAction {
        let step = startPublishingStep(generation: generation)
        return typed(step)
    }

    /// The broker's answers to the events copies of the last `.publish` (in its order).
    mutating func published(_ outcomes: [PublishOutcome]) -> PublishAction {
        let step = publishedStep(outcomes)
        return typed(step)
    }

    /// Publishing failed as a whole; `cancelled`: the worker is being cancelled, so no attempt is left.
    mutating func publishFailed(cancelled: Bool) -> PublishAction {
        let step = publishFailedStep(cancelled: cancelled)
        return typed(step)
    }

    /// A pause ended on time (either phase).
    mutating func tick<Action: BatchAction>() -> Action {
        let step = tickStep()
        return typed(step)
    }

    /// Graceful shutdown (or cancellation) cut a wait short (either phase).
    mutating func shutdown<Action: BatchAction>() -> Action {
        let step = shutdownStep()
        return typed(step)
    }

    /// The last effect (or ack) was executed (either phase).
    mutating func executed<Action: BatchAction>() -> Action {
        let step = executedStep()
        return typed(step)
    }

    /// The answer to `.handBack(.askGeneration)` (either phase): the consumer's live connection
    /// generation, nil while it is not connected (the broker has requeued what its lost channel held).
    mutating func handBackGeneration<Action: BatchAction>(_ generation: UInt64?) -> Action {
        let step = handBackGenerationStep(generation)
        return typed(step)
    }

    /// The answer to `.handBack(.publishCopies)` (either phase): what the broker said of each copy
    /// (nil: publishing them failed).
    mutating func copiesPublished<Action: BatchAction>(_ outcomes: [PublishOutcome?]) -> Action {
        let step = copiesPublishedStep(outcomes)
        return typed(step)
    }

    /// `step` (computed before, so the phase is the one it left the machine in) as the action of
    /// the phase the caller executes; traps when the machine is in the
    /// other phase, or when this phase cannot ask for it (an impossible event).
    private func typed<Action: BatchAction>(_ step: Step) -> Action {
        guard Action.isPublishPhase == inPublishPhase, let action = Action(step) else {
            preconditionFailure("BatchMachine: \(step) asked of the \(Action.isPublishPhase ? "publish" : "store") phase's executor")
        }
        return action
    }
}
