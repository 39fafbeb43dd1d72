import AMQP
import CreateCustomer

/// The rules of each delivery's fate, one event at a time: `BatchMachine`, which holds each
/// batch's state, applies this table to every event it is fed, and the worker executes what the
/// machine answers. Pure: no broker, no database, no clock; `DeliveryFateTests` covers every row,
/// `BatchMachineTests` the sequences.
///
/// | Event | Action |
/// |---|---|
/// | a batch of first deliveries arrives | store it in one transaction |
/// | a batch holding a redelivery arrives | store one command per transaction, redelivered ones marked first |
/// | a marker counted fewer than `HandlingAttempt.crashesBeforeDeadLetter` earlier unfinished attempts | store the command |
/// | a marker counted that many or more | dead-letter it (`crashed`) |
/// | stored: a reply | publish it |
/// | stored: the command failed on its own | dead-letter it (`failed`) |
/// | stored, but its channel closed meanwhile (the broker redelivers it) | publish nothing: the redelivery replays the stored reply, once |
/// | the store failed on a command's own fault, for a batch | store one command per transaction, unmarked |
/// | the same for one command | dead-letter it (`failed`) |
/// | two transactions collided (deadlock, serialization failure), fewer than `conflictAttempts` times in a row | run the same work again at once (after a few milliseconds) |
/// | the store is unavailable, or a conflict outlived those attempts | pause (not ready) and retry the same work |
/// | the store failed in a way nobody classified | pause and retry, logging the code at error level |
/// | the store still fails, and the oldest command held was received `HAND_BACK_AFTER` ago or longer | hand back everything held (below), stop consuming until the store answers, consume again |
/// | the store still fails, the commands held for less | keep holding them, retry |
/// | a handed-back copy confirmed by the broker | ack the original (no delivery spent) |
/// | a handed-back copy not confirmed (nacked, returned, not encodable, publishing failed) | requeue the original |
/// | events copy confirmed | ack (with the batch) |
/// | events copy returned (nothing bound to the events exchange) | ack: the broker took it; logged |
/// | events copy nacked | publish it again |
/// | events copy cannot be encoded | dead-letter the command (`failed`): no attempt can publish it |
/// | publishing failed as a whole, attempts left | publish again after a delay |
/// | publishing failed as a whole, no attempt left | return the batch (below) |
/// | graceful shutdown with deliveries in hand | return them (below): a marker committed for work that did not commit is never requeued, but handed back after consuming stops (`BatchMachine`), so a graceful stop leaves no marker that a later attempt counts |
/// | returning a delivery short of its last | requeue it |
/// | returning a delivery at its last (a requeue would dead-letter it, stored or not) | hand it back |
///
/// Handing back gives a delivery back without spending one of its deliveries on either broker:
/// its copy (body and properties unchanged, the broker's `x-delivery-count` dropped, the header
/// `x-handed-back` counting) is published to the command queue with confirms, then the original
/// is acknowledged. A crash in between leaves a duplicate, which idempotency answers with the same
/// reply. So the broker's acknowledgement timeout never meets a held command, and a command whose
/// transaction committed is never dead-lettered by a requeue: its next delivery replays its reply.
enum DeliveryFate {
    enum Event: Sendable, Equatable {
        case received(anyRedelivered: Bool)
        case attemptCounted(earlierUnfinished: Int)
        case stored(CommandOutcome)
        case channelClosedSinceDelivery
        case storeFailed(StoreFailure, commands: Int, error: String)
        /// The work collided with another transaction, `attempt` times in a row.
        case conflicted(attempt: Int)
        case eventsCopy(PublishOutcome)
        case publishFailed(attempt: Int, limit: Int)
        case shutdown
        /// The store failed again; the oldest command held was received `heldFor` ago.
        case storeStillFailing(heldFor: Duration, handBackAfter: Duration)
        /// A delivery goes back to the queue (`DeliveryFate.Action.requeue` was decided for its
        /// batch); `deliveryCount` is its `x-delivery-count` (0 when absent), `limit` the queue's.
        case returning(deliveryCount: Int, limit: Int)
        /// What the broker said about a handed-back copy; nil when publishing it failed.
        case handedBack(PublishOutcome?)
    }

    enum Action: Sendable, Equatable {
        case storeBatch
        case storeOneByOne(markRedelivered: Bool)
        case store
        case publish(ReplyRecord)
        case deadLetter(WorkerMetrics.DeadLetterReason, detail: String)
        case pauseAndRetry(unclassified: Bool)
        case storeAgain
        case ack
        case ackReturned
        case publishAgain
        case requeue
        case forget
        case keepHolding
        case handBack
    }

    static func decide(_ event: Event) -> Action {
        switch event {
        case .received(let anyRedelivered):
            // A redelivery may be a command that took a worker down: alone, it can only take itself.
            return anyRedelivered ? .storeOneByOne(markRedelivered: true) : .storeBatch
        case .attemptCounted(let earlier):
            return earlier >= HandlingAttempt.crashesBeforeDeadLetter
                ? .deadLetter(.crashed, detail: "the worker died while handling it before (\(earlier) unfinished attempt(s))")
                : .store
        case .stored(.reply(let reply)):
            return .publish(reply)
        case .stored(.failed(let reason)):
            return .deadLetter(.failed, detail: reason)
        case .channelClosedSinceDelivery:
            return .forget
        case .storeFailed(let failure, let commands, let error):
            switch failure.kind {
            case .command: return commands > 1 ? .storeOneByOne(markRedelivered: false) : .deadLetter(.failed, detail: error)
            case .unavailable, .conflict: return .pauseAndRetry(unclassified: false)
            case .unknown: return .pauseAndRetry(unclassified: true)
            }
        case .conflicted(let attempt):
            return attempt < conflictAttempts ? .storeAgain : .pauseAndRetry(unclassified: false)
        case .eventsCopy(.confirmed):
            return .ack
        case .eventsCopy(.returned):
            return .ackReturned
        case .eventsCopy(.nacked):
            return .publishAgain
        case .eventsCopy(.unencodable(let reason)):
            return .deadLetter(.failed, detail: "its reply cannot be published: \(reason)")
        case .publishFailed(let attempt, let limit):
            return attempt < limit ? .publishAgain : .requeue
        case .shutdown:
            return .requeue
        case .storeStillFailing(let heldFor, let handBackAfter):
            return heldFor >= handBackAfter ? .handBack : .keepHolding
        case .returning(let count, let limit):
            return isLastDelivery(deliveryCount: count, limit: limit) ? .handBack : .requeue
        case .handedBack(.confirmed?):
            return .ack
        case .handedBack:
            return .requeue
        }
    }

    /// How many times in a row the same work runs while it keeps colliding with other transactions,
    /// before the worker pauses as for an unavailable store.
    static let conflictAttempts = 10

    /// Whether a requeue could make the queue dead-letter this delivery. RabbitMQ 3.10 counts
    /// every return and dead-letters a message returned with `x-delivery-count` at the limit;
    /// 4.x counts differently (a reject counts, a nack does not) and its acquired count may run one
    /// ahead: one delivery of margin covers both, and costs at most one early hand-back.
    static func isLastDelivery(deliveryCount: Int, limit: Int) -> Bool {
        deliveryCount >= limit - 1
    }
}
