import AMQP
import BrokerTestSupport
import Testing

/// Publisher-confirm bookkeeping, without a broker.
@Suite("Confirm tracker", .closesResources)
struct ConfirmTrackerTests {
    private func pending(_ request: UInt64, _ index: Int, exchange: String = "events", key: String = "k", id: String? = nil) -> ConfirmTracker.Pending {
        .init(request: request, index: index, exchange: exchange, routingKey: key, messageID: id ?? "m-\(request)-\(index)")
    }

    private func tracker(_ count: Int, request: UInt64 = 1) -> ConfirmTracker {
        var tracker = ConfirmTracker()
        for index in 0..<count { tracker.published(pending(request, index)) }
        return tracker
    }

    @Test func sequenceNumbersStartAtOneAndCount() {
        var tracker = ConfirmTracker()
        #expect(tracker.published(pending(1, 0)) == 1)
        #expect(tracker.published(pending(1, 1)) == 2)
        #expect(tracker.nextSequence == 3)
        #expect(tracker.unsettledCount == 2)
    }

    @Test func multipleSettlesEverythingUpToTheTag() {
        var tracker = tracker(5)
        let settled = tracker.acked(3, multiple: true)
        #expect(settled.map(\.index) == [0, 1, 2])
        #expect(settled.allSatisfy { $0.outcome == .confirmed })
        #expect(tracker.unsettledCount == 2)
        #expect(tracker.acked(5, multiple: false).map(\.index) == [4])
        #expect(tracker.nacked(4, multiple: false) == [.init(request: 1, index: 3, outcome: .nacked)])
        #expect(tracker.unsettledCount == 0)
        #expect(tracker.nextSequence == 6, "numbering goes on while the channel lives")
    }

    @Test func confirmsOfUnknownOrRepeatedTagsAreIgnored() {
        var tracker = tracker(2)
        #expect(tracker.acked(1, multiple: false).count == 1)
        #expect(tracker.acked(1, multiple: false).isEmpty)
        #expect(tracker.acked(9, multiple: false).isEmpty)
        #expect(tracker.acked(9, multiple: true).map(\.index) == [1])
        #expect(tracker.acked(10, multiple: true).isEmpty)
    }

    @Test func aReturnMarksTheOldestMatchingMessageAndItsAckReportsIt() {
        var tracker = ConfirmTracker()
        tracker.published(pending(1, 0, exchange: "events", key: "a", id: "x"))
        tracker.published(pending(1, 1, exchange: "", key: "gone", id: "x"))
        tracker.published(pending(1, 2, exchange: "", key: "gone", id: "y"))
        let matched = tracker.returned(exchange: "", routingKey: "gone", messageID: "x", replyCode: 312, replyText: "NO_ROUTE")
        let unmatched = tracker.returned(exchange: "", routingKey: "elsewhere", messageID: "x", replyCode: 312, replyText: "NO_ROUTE")
        #expect(matched && !unmatched)
        let settled = tracker.acked(3, multiple: true)
        #expect(settled.map(\.outcome) == [.confirmed, .returned(replyCode: 312, replyText: "NO_ROUTE"), .confirmed])
    }

    @Test func outcomesStayPerMessageAcrossRequests() {
        var tracker = ConfirmTracker()
        tracker.published(pending(1, 0))
        tracker.published(pending(2, 0))
        tracker.published(pending(1, 1))
        #expect(tracker.nacked(2, multiple: false) == [.init(request: 2, index: 0, outcome: .nacked)])
        #expect(tracker.acked(3, multiple: true) == [.init(request: 1, index: 0, outcome: .confirmed), .init(request: 1, index: 1, outcome: .confirmed)])
    }

    @Test func aForgottenRequestsConfirmsAreIgnored() {
        var tracker = ConfirmTracker()
        tracker.published(pending(1, 0))
        tracker.published(pending(2, 0))
        tracker.forget(request: 1)
        #expect(tracker.acked(2, multiple: true) == [.init(request: 2, index: 0, outcome: .confirmed)])
    }

    @Test func resetReturnsTheUnsettledInOrderAndRestartsNumbering() {
        var tracker = tracker(4)
        _ = tracker.acked(2, multiple: false)
        let unsettled = tracker.reset()
        #expect(unsettled.map(\.index) == [0, 2, 3])
        #expect(tracker.nextSequence == 1)
        #expect(tracker.unsettledCount == 0)
    }

    @Test func memoryStaysBoundedOverManyConfirms() {
        var tracker = ConfirmTracker()
        for round in 0..<100 {
            for index in 0..<100 { tracker.published(pending(UInt64(round), index)) }
            #expect(tracker.acked(tracker.nextSequence - 1, multiple: true).count == 100)
        }
        #expect(tracker.unsettledCount == 0)
        #expect(tracker.nextSequence == 10_001)
    }
}
