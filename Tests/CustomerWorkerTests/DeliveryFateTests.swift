import AMQP
import CreateCustomer
@testable import CustomerWorker
import BrokerTestSupport
import Testing

/// Every row of `DeliveryFate`'s table, without a broker or a database.
@Suite("Delivery fate (no servers)", .closesResources)
struct DeliveryFateTests {
    static let reply = ReplyRecord(type: .customerCreated, idempotencyKey: "k", messageID: "m", body: [1], replayed: false, errorCode: nil)

    @Test func firstDeliveriesAreStoredInOneTransaction() {
        #expect(DeliveryFate.decide(.received(anyRedelivered: false)) == .storeBatch)
    }

    @Test func aBatchWithARedeliveryIsStoredOneByOneWithMarkers() {
        #expect(DeliveryFate.decide(.received(anyRedelivered: true)) == .storeOneByOne(markRedelivered: true))
    }

    @Test(arguments: 0..<HandlingAttempt.crashesBeforeDeadLetter)
    func fewerUnfinishedAttemptsThanTheThresholdAreTriedAgain(_ earlier: Int) {
        // One left behind is a blip, an unrelated kill -9 or a SIGTERM during an outage.
        #expect(DeliveryFate.decide(.attemptCounted(earlierUnfinished: earlier)) == .store)
    }

    @Test(arguments: [HandlingAttempt.crashesBeforeDeadLetter, HandlingAttempt.crashesBeforeDeadLetter + 3])
    func enoughUnfinishedAttemptsDeadLetterTheCommandAsCrashed(_ earlier: Int) {
        guard case .deadLetter(.crashed, let detail) = DeliveryFate.decide(.attemptCounted(earlierUnfinished: earlier)) else {
            Issue.record("not dead-lettered"); return
        }
        #expect(detail.contains("\(earlier) unfinished attempt"))
    }

    @Test func aStoredReplyIsPublished() {
        #expect(DeliveryFate.decide(.stored(.reply(Self.reply))) == .publish(Self.reply))
    }

    @Test func aCommandFailingOnItsOwnIsDeadLettered() {
        #expect(DeliveryFate.decide(.stored(.failed(reason: "plan pro: trialDays"))) == .deadLetter(.failed, detail: "plan pro: trialDays"))
    }

    @Test func aCommandStoredAfterItsChannelClosedGetsNoReplyFromThisWorker() {
        #expect(DeliveryFate.decide(.channelClosedSinceDelivery) == .forget)
    }

    @Test func aCommandFaultInABatchSplitsIt() {
        let failure = StoreFailure(.command, code: "SQLITE_CONSTRAINT (19)")
        #expect(DeliveryFate.decide(.storeFailed(failure, commands: 5, error: "e")) == .storeOneByOne(markRedelivered: false))
    }

    @Test func aCommandFaultAloneIsDeadLettered() {
        let failure = StoreFailure(.command, code: "SQLITE_CONSTRAINT (19)")
        #expect(DeliveryFate.decide(.storeFailed(failure, commands: 1, error: "e")) == .deadLetter(.failed, detail: "e"))
    }

    @Test(arguments: [StoreFailureClass.unavailable, .conflict], [1, 50])
    func anUnavailableStoreOrAStubbornConflictPauses(_ kind: StoreFailureClass, _ commands: Int) {
        #expect(DeliveryFate.decide(.storeFailed(StoreFailure(kind, code: "x"), commands: commands, error: "e")) == .pauseAndRetry(unclassified: false))
    }

    @Test(arguments: [1, 50])
    func anUnclassifiedFailurePausesAndIsNamed(_ commands: Int) {
        #expect(DeliveryFate.decide(.storeFailed(StoreFailure(.unknown, code: "XX000"), commands: commands, error: "e"))
            == .pauseAndRetry(unclassified: true), "never dead-letters a stream")
    }

    @Test func confirmedEventsCopiesAreAcked() {
        #expect(DeliveryFate.decide(.eventsCopy(.confirmed)) == .ack)
    }

    @Test func returnedEventsCopiesAreAckedAndNoted() {
        #expect(DeliveryFate.decide(.eventsCopy(.returned(replyCode: 312, replyText: "NO_ROUTE"))) == .ackReturned)
    }

    @Test func nackedEventsCopiesArePublishedAgain() {
        #expect(DeliveryFate.decide(.eventsCopy(.nacked)) == .publishAgain)
    }

    @Test func anUnencodableReplyDeadLettersItsCommandOnly() {
        guard case .deadLetter(.failed, let detail) = DeliveryFate.decide(.eventsCopy(.unencodable(reason: "too long"))) else {
            Issue.record("not dead-lettered"); return
        }
        #expect(detail.contains("too long"))
    }

    @Test func aFailedPublishIsRetriedThenRequeued() {
        #expect(DeliveryFate.decide(.publishFailed(attempt: 1, limit: 5)) == .publishAgain)
        #expect(DeliveryFate.decide(.publishFailed(attempt: 4, limit: 5)) == .publishAgain)
        #expect(DeliveryFate.decide(.publishFailed(attempt: 5, limit: 5)) == .requeue)
    }

    @Test func shutdownRequeuesWhatIsHeld() {
        #expect(DeliveryFate.decide(.shutdown) == .requeue)
    }
}
