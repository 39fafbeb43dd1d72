import AMQP
import CreateCustomer

/// The rules of each delivery's fate, one event at a time: `BatchMachine`, which holds each
/// batch's state, applies this table to every event it is fed, and the worker executes what the
/// machine answers. Pure: no broker, no database, no clock; `DeliveryFateTests` covers its rows,
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
///
/// Each event is a function answering with a type of its own, holding only what that event can
/// lead to: the machine matches every answer exhaustively and never meets one that cannot be. Two
/// rows have one answer whatever happens and are applied by `BatchMachine` directly: a command
/// stored after its channel closed is forgotten (`startPublishing`), and graceful shutdown returns
/// what is held (`shutdown`).
enum DeliveryFate {
    /// How a batch is stored.
    enum Storing: Sendable, Equatable {
        case inOneTransaction
        case oneByOne(markRedelivered: Bool)
    }

    static func received(anyRedelivered: Bool) -> Storing {
        // A redelivery may be a command that took a worker down: alone, it can only take itself.
        anyRedelivered ? .oneByOne(markRedelivered: true) : .inOneTransaction
    }

    enum AfterMarker: Sendable, Equatable {
        case store
        case deadLetter(WorkerMetrics.DeadLetterReason, detail: String)
    }

    /// A marker was committed; `earlierUnfinished` attempts were counted before it.
    static func attemptCounted(earlierUnfinished earlier: Int) -> AfterMarker {
        earlier >= HandlingAttempt.crashesBeforeDeadLetter
            ? .deadLetter(.crashed, detail: "the worker died while handling it before (\(earlier) unfinished attempt(s))")
            : .store
    }

    enum AfterStore: Sendable, Equatable {
        case publish(ReplyRecord)
        case deadLetter(WorkerMetrics.DeadLetterReason, detail: String)
    }

    /// The work transaction committed with this outcome for the command.
    static func stored(_ outcome: CommandOutcome) -> AfterStore {
        switch outcome {
        case .reply(let reply): .publish(reply)
        case .failed(let reason): .deadLetter(.failed, detail: reason)
        }
    }

    enum AfterStoreFailure: Sendable, Equatable {
        /// A batch failed on one command's fault: one command per transaction, unmarked.
        case storeOneByOne
        case deadLetter(WorkerMetrics.DeadLetterReason, detail: String)
        case pauseAndRetry(unclassified: Bool)
    }

    /// The store failed for `commands` commands.
    static func storeFailed(_ failure: StoreFailure, commands: Int, error: String) -> AfterStoreFailure {
        switch failure.kind {
        case .command: commands > 1 ? .storeOneByOne : .deadLetter(.failed, detail: error)
        case .unavailable, .conflict: .pauseAndRetry(unclassified: false)
        case .unknown: .pauseAndRetry(unclassified: true)
        }
    }

    enum AfterConflict: Sendable, Equatable {
        case storeAgain
        case pauseAndRetry
    }

    /// The work collided with another transaction, `attempt` times in a row.
    static func conflicted(attempt: Int) -> AfterConflict {
        attempt < conflictAttempts ? .storeAgain : .pauseAndRetry
    }

    enum AfterEventsCopy: Sendable, Equatable {
        case ack
        case ackReturned
        case publishAgain
        case deadLetter(WorkerMetrics.DeadLetterReason, detail: String)
    }

    /// What the broker said of a reply's events copy.
    static func eventsCopy(_ outcome: PublishOutcome) -> AfterEventsCopy {
        switch outcome {
        case .confirmed: .ack
        case .returned: .ackReturned
        case .nacked: .publishAgain
        case .unencodable(let reason): .deadLetter(.failed, detail: "its reply cannot be published: \(reason)")
        }
    }

    enum AfterPublishFailure: Sendable, Equatable {
        case publishAgain
        /// Return the batch (requeue, or hand back: `returning`).
        case giveBack
    }

    /// Publishing failed as a whole at `attempt` of `limit`.
    static func publishFailed(attempt: Int, limit: Int) -> AfterPublishFailure {
        attempt < limit ? .publishAgain : .giveBack
    }

    enum WhileStoreFails: Sendable, Equatable {
        case keepHolding
        case handBack
    }

    /// The store failed again; the oldest command held was received `heldFor` ago.
    static func storeStillFailing(heldFor: Duration, handBackAfter: Duration) -> WhileStoreFails {
        heldFor >= handBackAfter ? .handBack : .keepHolding
    }

    enum Return: Sendable, Equatable {
        case requeue
        case handBack
    }

    /// A delivery goes back to the queue; `deliveryCount` is its `x-delivery-count` (0 when
    /// absent), `limit` the queue's.
    static func returning(deliveryCount: Int, limit: Int) -> Return {
        isLastDelivery(deliveryCount: deliveryCount, limit: limit) ? .handBack : .requeue
    }

    enum AfterCopy: Sendable, Equatable {
        case ackOriginal
        case requeueOriginal
    }

    /// What the broker said of a handed-back copy; nil when publishing it failed.
    static func handedBack(_ outcome: PublishOutcome?) -> AfterCopy {
        outcome == .confirmed ? .ackOriginal : .requeueOriginal
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
