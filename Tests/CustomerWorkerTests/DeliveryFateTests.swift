import AMQP
import CreateCustomer
@testable import CustomerWorker
import BrokerTestSupport
import Testing

/// Every row of `DeliveryFate`'s table, without a broker or a database (the two rows with one
/// answer whatever happens, forgetting a command whose channel closed and returning what is held at
/// shutdown, are the machine's: `BatchMachineTests`).
@Suite("Delivery fate (no servers)", .closesResources)
struct DeliveryFateTests {
    static let reply = ReplyRecord(type: .customerCreated, idempotencyKey: "k", messageID: "m", body: [1], replayed: false, errorCode: nil)

    @Test func firstDeliveriesAreStoredInOneTransaction() {
        #expect(DeliveryFate.received(anyRedelivered: false) == .inOneTransaction)
    }

    @Test func aBatchWithARedeliveryIsStoredOneByOneWithMarkers() {
        #expect(DeliveryFate.received(anyRedelivered: true) == .oneByOne(markRedelivered: true))
    }

    @Test(arguments: 0..<HandlingAttempt.crashesBeforeDeadLetter)
    func fewerUnfinishedAttemptsThanTheThresholdAreTriedAgain(_ earlier: Int) {
        // One left behind is a blip, an unrelated kill -9 or a SIGTERM during an outage.
        #expect(DeliveryFate.attemptCounted(earlierUnfinished: earlier) == .store)
    }

    @Test(arguments: [HandlingAttempt.crashesBeforeDeadLetter, HandlingAttempt.crashesBeforeDeadLetter + 3])
    func enoughUnfinishedAttemptsDeadLetterTheCommandAsCrashed(_ earlier: Int) {
        guard case .deadLetter(.crashed, let detail) = DeliveryFate.attemptCounted(earlierUnfinished: earlier) else {
            Issue.record("not dead-lettered"); return
        }
        #expect(detail.contains("\(earlier) unfinished attempt"))
    }

    @Test func aStoredReplyIsPublished() {
        #expect(DeliveryFate.stored(.reply(Self.reply)) == .publish(Self.reply))
    }

    @Test func aCommandFailingOnItsOwnIsDeadLettered() {
        #expect(DeliveryFate.stored(.failed(reason: "plan pro: trialDays")) == .deadLetter(.failed, detail: "plan pro: trialDays"))
    }

    @Test func aCommandFaultInABatchSplitsIt() {
        let failure = StoreFailure(.command, code: "SQLITE_CONSTRAINT (19)")
        #expect(DeliveryFate.storeFailed(failure, commands: 5, error: "e") == .storeOneByOne)
    }

    @Test func aCommandFaultAloneIsDeadLettered() {
        let failure = StoreFailure(.command, code: "SQLITE_CONSTRAINT (19)")
        #expect(DeliveryFate.storeFailed(failure, commands: 1, error: "e") == .deadLetter(.failed, detail: "e"))
    }

    @Test(arguments: [StoreFailureClass.unavailable, .conflict], [1, 50])
    func anUnavailableStoreOrAStubbornConflictPauses(_ kind: StoreFailureClass, _ commands: Int) {
        #expect(DeliveryFate.storeFailed(StoreFailure(kind, code: "x"), commands: commands, error: "e") == .pauseAndRetry(unclassified: false))
    }

    @Test func collisionsRunTheWorkAgainAtOnceThenPause() {
        #expect(DeliveryFate.conflicted(attempt: 1) == .storeAgain)
        #expect(DeliveryFate.conflicted(attempt: DeliveryFate.conflictAttempts - 1) == .storeAgain)
        #expect(DeliveryFate.conflicted(attempt: DeliveryFate.conflictAttempts) == .pauseAndRetry)
    }

    @Test(arguments: [1, 50])
    func anUnclassifiedFailurePausesAndIsNamed(_ commands: Int) {
        #expect(DeliveryFate.storeFailed(StoreFailure(.unknown, code: "XX000"), commands: commands, error: "e")
            == .pauseAndRetry(unclassified: true), "never dead-letters a stream")
    }

    @Test func confirmedEventsCopiesAreAcked() {
        #expect(DeliveryFate.eventsCopy(.confirmed) == .ack)
    }

    @Test func returnedEventsCopiesAreAckedAndNoted() {
        #expect(DeliveryFate.eventsCopy(.returned(replyCode: 312, replyText: "NO_ROUTE")) == .ackReturned)
    }

    @Test func nackedEventsCopiesArePublishedAgain() {
        #expect(DeliveryFate.eventsCopy(.nacked) == .publishAgain)
    }

    @Test func anUnencodableReplyDeadLettersItsCommandOnly() {
        guard case .deadLetter(.failed, let detail) = DeliveryFate.eventsCopy(.unencodable(reason: "too long")) else {
            Issue.record("not dead-lettered"); return
        }
        #expect(detail.contains("too long"))
    }

    @Test func aFailedPublishIsRetriedThenRequeued() {
        #expect(DeliveryFate.publishFailed(attempt: 1, limit: 5) == .publishAgain)
        #expect(DeliveryFate.publishFailed(attempt: 4, limit: 5) == .publishAgain)
        #expect(DeliveryFate.publishFailed(attempt: 5, limit: 5) == .giveBack)
    }

    @Test func commandsHeldThroughAnOutageAreHandedBackOnTime() {
        #expect(DeliveryFate.storeStillFailing(heldFor: .seconds(59), handBackAfter: .seconds(60)) == .keepHolding)
        #expect(DeliveryFate.storeStillFailing(heldFor: .seconds(60), handBackAfter: .seconds(60)) == .handBack)
        #expect(DeliveryFate.storeStillFailing(heldFor: .seconds(3600), handBackAfter: .seconds(60)) == .handBack)
    }

    /// RabbitMQ 3.10 dead-letters a message returned with `x-delivery-count` at the limit (its
    /// sixth delivery with a limit of 5 carries 5); the one before is handed back too (4.x counts
    /// differently), so no requeue can dead-letter a command whose transaction committed.
    @Test(arguments: [(0, 5, DeliveryFate.Return.requeue), (3, 5, .requeue), (4, 5, .handBack), (5, 5, .handBack), (9, 5, .handBack),
                      (0, 1, .handBack)])
    func aDeliveryIsRequeuedUnlessItIsItsLast(_ count: Int, _ limit: Int, _ action: DeliveryFate.Return) {
        #expect(DeliveryFate.returning(deliveryCount: count, limit: limit) == action)
    }

    @Test func aConfirmedCopyAcksTheOriginalAndAnythingElseRequeuesIt() {
        #expect(DeliveryFate.handedBack(.confirmed) == .ackOriginal)
        for outcome: PublishOutcome? in [.nacked, .returned(replyCode: 312, replyText: "NO_ROUTE"), .unencodable(reason: "r"), nil] {
            #expect(DeliveryFate.handedBack(outcome) == .requeueOriginal, "\(String(describing: outcome))")
        }
    }
}
