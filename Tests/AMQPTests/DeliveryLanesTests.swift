@testable import AMQP
import Testing

/// Round-robin hand-out across consumers, and acknowledgements that never cover a delivery not
/// being acknowledged: without a broker.
@Suite("Delivery lanes")
struct DeliveryLanesTests {
    private func delivery(_ tag: UInt64, _ consumer: String) -> Delivery {
        Delivery(tag: DeliveryTag(connectionGeneration: 1, value: tag), consumerTag: consumer, queue: consumer, redelivered: false,
                 exchange: "", routingKey: "", body: [], properties: MessageProperties(), receivedAt: .now)
    }

    private func lanes(_ deliveries: [(UInt64, String)]) -> DeliveryLanes {
        var lanes = DeliveryLanes()
        for (tag, consumer) in deliveries { lanes.append(delivery(tag, consumer)) }
        return lanes
    }

    @Test func oneConsumerIsHandedOutInArrivalOrder() {
        var lanes = lanes((1...10).map { ($0, "heavy") })
        #expect(lanes.take(4).map(\.tag.value) == [1, 2, 3, 4])
        #expect(lanes.take(100).map(\.tag.value) == [5, 6, 7, 8, 9, 10])
        #expect(lanes.isEmpty)
    }

    @Test func aQuietQueuesDeliveryIsNotHandedOutBehindABusyQueuesWindow() {
        // 300 of the heavy shard's arrived first, then one of the light shard's.
        var lanes = lanes((1...300).map { ($0, "heavy") } + [(301, "light")])
        #expect(lanes.take(128).map(\.tag.value) == [301], "the light delivery goes first, in a batch of its own")
        #expect(lanes.take(128).map(\.tag.value) == Array(1...128), "then a full batch of the heavy shard's, in its order")
        #expect(lanes.count == 172)
        #expect(lanes.take(1000).map(\.tag.value) == Array(129...300))
    }

    /// While quiet lanes keep receiving beside a busy one, their batches alternate with turns of
    /// every lane: the busy lane is never starved, and quiet lanes are never behind a full batch.
    @Test func quietLanesAlternateWithTurnsOfEveryLane() {
        var lanes = lanes((1...300).map { ($0, "heavy") } + [(301, "a"), (302, "b"), (303, "b")])
        #expect(Set(lanes.take(128).map(\.tag.value)) == [301, 302, 303], "every quiet lane's deliveries, and only theirs")
        lanes.append(delivery(304, "a"))
        let turn = lanes.take(128)
        #expect(turn.count == 128 && turn.contains { $0.tag.value == 304 }, "the next take is a turn of every lane, not the quiet ones again")
        lanes.append(delivery(305, "b"))
        #expect(lanes.take(128).map(\.tag.value) == [305], "then the quiet lanes' alone again")
        // A lane deeper than a quiet one's is busy: two heavy lanes just take turns.
        var twoBusy = self.lanes((1...10).map { ($0, "x") } + (11...20).map { ($0, "y") })
        #expect(Set(twoBusy.take(8).map(\.consumerTag)) == ["x", "y"])
        // Only quiet lanes (no busy one beside them): plain turns.
        var allQuiet = self.lanes([(1, "a"), (2, "b"), (3, "a")])
        #expect(Set(allQuiet.take(2).map(\.consumerTag)) == ["a", "b"])
        // A quiet batch never exceeds the maximum.
        var many = self.lanes((1...50).map { ($0, "heavy") } + (51...54).map { ($0, "q1") } + (55...58).map { ($0, "q2") })
        #expect(many.take(5).count == 5)
        #expect(many.count == 53)
    }

    /// A take that empties a lane drops it; deliveries arriving afterwards still join their own
    /// consumer's lane, whether it was kept or dropped.
    @Test func deliveriesFindTheirLaneAfterATakeEmptiedAnother() {
        var lanes = lanes([(1, "a"), (2, "a"), (3, "a"), (4, "b"), (5, "c"), (6, "c")])
        #expect(Set(lanes.take(3).map(\.tag.value)) == [1, 4, 5])  // one of each; "b" is empty now
        for (tag, consumer) in [(7, "c"), (8, "b"), (9, "a")] as [(UInt64, String)] { lanes.append(delivery(tag, consumer)) }
        let rest = lanes.take(100)
        for consumer in ["a", "b", "c"] {
            let own = rest.filter { $0.consumerTag == consumer }.map(\.tag.value)
            #expect(own == own.sorted(), "\(consumer) keeps its order")
        }
        #expect(rest.filter { $0.consumerTag == "a" }.map(\.tag.value) == [2, 3, 9])
        #expect(rest.filter { $0.consumerTag == "b" }.map(\.tag.value) == [8])
        #expect(rest.filter { $0.consumerTag == "c" }.map(\.tag.value) == [6, 7])
        #expect(lanes.isEmpty)
    }

    @Test func lanesTakeTurnsAndNoLaneIsAlwaysFirst() {
        var lanes = lanes([(1, "a"), (2, "a"), (3, "b"), (4, "b"), (5, "c")])
        let first = lanes.take(3).map(\.consumerTag)
        #expect(Set(first) == ["a", "b", "c"], "one of each lane before a second of any")
        lanes = self.lanes([(1, "a"), (2, "b"), (3, "a"), (4, "b")])
        let firstOfEachTake = [lanes.take(1), lanes.take(1)].map { $0[0].consumerTag }
        #expect(firstOfEachTake == ["a", "b"])
    }

    @Test func removeAllGivesEveryDeliveryInTheBrokersOrder() {
        var lanes = lanes([(1, "a"), (2, "b"), (3, "a"), (4, "c"), (5, "b")])
        #expect(lanes.removeAll().map(\.tag.value) == [1, 2, 3, 4, 5])
        #expect(lanes.isEmpty && lanes.take(10).isEmpty)
    }

    @Test func multipleCoversOnlyTheDeliveriesBeingAcknowledged() {
        var unsettled = UnsettledTags()
        for tag in UInt64(1)...10 { unsettled.delivered(tag) }
        // A batch of 1...4 and 9 (9 came from another lane): 5...8 are still being handled.
        let plan = unsettled.acknowledge([1, 2, 3, 4, 9])
        #expect(plan.upTo == 4)
        #expect(plan.singles == [9])
        #expect(unsettled.count == 5)
        // The rest, out of order: one multiple covers them all.
        let rest = unsettled.acknowledge([10, 6, 5, 8, 7])
        #expect(rest.upTo == 10 && rest.singles.isEmpty)
        #expect(unsettled.count == 0)
    }

    @Test func aBatchAheadOfAnUnsettledDeliveryIsAcknowledgedOneByOne() {
        var unsettled = UnsettledTags()
        for tag in UInt64(1)...5 { unsettled.delivered(tag) }
        let plan = unsettled.acknowledge([2, 3, 5])
        #expect(plan.upTo == nil, "1 is unsettled: a multiple up to any of them would cover it")
        #expect(plan.singles == [2, 3, 5])
        // A lone oldest tag is one single, not a multiple.
        #expect(unsettled.acknowledge([1]) == (upTo: nil, singles: [1]))
    }

    @Test func settledTagsAreNeverAcknowledgedTwice() {
        var unsettled = UnsettledTags()
        for tag in UInt64(1)...6 { unsettled.delivered(tag) }
        unsettled.settled(2, multiple: false)  // rejected (dead-lettered) on its own
        unsettled.settled(1, multiple: false)
        let plan = unsettled.acknowledge([1, 2, 3, 4])
        #expect(plan.upTo == 4 && plan.singles.isEmpty, "1 and 2 are left out; 3...4 is the oldest run")
        unsettled.settled(5, multiple: true)
        #expect(unsettled.count == 1)
        unsettled.reset()
        #expect(unsettled.acknowledge([6]) == (upTo: nil, singles: []), "after the channel is gone nothing is acknowledged")
    }
}
