import AMQP
import CreateCustomer

/// The one place that decides each delivery's fate: the worker reports what happened to a batch
/// or to one of its commands (an `Event`) and executes the `Action` this table answers. Pure: no
/// broker, no database, no clock; `DeliveryFateTests` covers every row.
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
/// | the store is unavailable, or a conflict outlived the store's retries | pause (not ready) and retry the same work |
/// | the store failed in a way nobody classified | pause and retry, logging the code at error level |
/// | events copy confirmed | ack (with the batch) |
/// | events copy returned (nothing bound to the events exchange) | ack: the broker took it; logged |
/// | events copy nacked | publish it again |
/// | events copy cannot be encoded | dead-letter the command (`failed`): no attempt can publish it |
/// | publishing failed as a whole, attempts left | publish again after a delay |
/// | publishing failed as a whole, no attempt left | requeue the batch |
/// | graceful shutdown with deliveries in hand | requeue them (markers are cleared best effort; one left behind is not enough to dead-letter) |
enum DeliveryFate {
    enum Event: Sendable, Equatable {
        case received(anyRedelivered: Bool)
        case attemptCounted(earlierUnfinished: Int)
        case stored(CommandOutcome)
        case channelClosedSinceDelivery
        case storeFailed(StoreFailure, commands: Int, error: String)
        case eventsCopy(PublishOutcome)
        case publishFailed(attempt: Int, limit: Int)
        case shutdown
    }

    enum Action: Sendable, Equatable {
        case storeBatch
        case storeOneByOne(markRedelivered: Bool)
        case store
        case publish(ReplyRecord)
        case deadLetter(WorkerMetrics.DeadLetterReason, detail: String)
        case pauseAndRetry(unclassified: Bool)
        case ack
        case ackReturned
        case publishAgain
        case requeue
        case forget
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
        }
    }
}
