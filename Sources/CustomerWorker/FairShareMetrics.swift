import AMQP
import Metrics
import Observability

/// The share each lane (shard) of the command queue gets: deliveries per lane, counted as they
/// arrive. A lane is a shard's index or `unsharded`, never a merchant, so the labels stay bounded
/// however many merchants there are; the broker's per-queue depth shows each shard's backlog.
struct FairShareMetrics: Sendable {
    /// Each queue the worker consumes → its lane's counter (the lane named once per queue here,
    /// not once per delivery: that parse was ~4,000 instructions a command).
    private let counterOfQueue: [String: Counter]
    private let unsharded: Counter

    init(_ fairShare: FairShare) {
        let lanes = Dictionary(uniqueKeysWithValues: fairShare.lanes.map {
            ($0, Counter(label: MetricName.laneDeliveries, dimensions: [("lane", $0)]))
        })
        let unsharded = lanes[FairShare.unshardedLane] ?? Counter(label: MetricName.laneDeliveries, dimensions: [("lane", FairShare.unshardedLane)])
        self.unsharded = unsharded
        counterOfQueue = Dictionary(uniqueKeysWithValues: fairShare.consumedQueues.map { queue in
            (queue, lanes[fairShare.lane(ofQueue: queue)] ?? unsharded)
        })
        Gauge(label: MetricName.fairShareShards).record(fairShare.shards)
    }

    /// Counts a batch by runs of deliveries from one queue (a batch takes lanes in turns, and a
    /// busy lane's deliveries come in runs), one counter lookup per run.
    func record(_ deliveries: [Delivery]) {
        var start = deliveries.startIndex
        while start < deliveries.endIndex {
            let queue = deliveries[start].queue
            var end = start + 1
            while end < deliveries.endIndex, deliveries[end].queue == queue { end += 1 }
            (queue.flatMap { counterOfQueue[$0] } ?? unsharded).increment(by: end - start)
            start = end
        }
    }
}
