import AMQP
import Metrics
import Observability

/// The share each lane (shard) of the command queue gets: deliveries per lane, counted as they
/// arrive. A lane is a shard's index or `unsharded`, never a merchant, so the labels stay bounded
/// however many merchants there are; the broker's per-queue depth shows each shard's backlog.
struct FairShareMetrics: Sendable {
    private let fairShare: FairShare
    private let lanes: [String: Counter]

    init(_ fairShare: FairShare) {
        self.fairShare = fairShare
        lanes = Dictionary(uniqueKeysWithValues: fairShare.lanes.map {
            ($0, Counter(label: MetricName.laneDeliveries, dimensions: [("lane", $0)]))
        })
        Gauge(label: MetricName.fairShareShards).record(fairShare.shards)
    }

    func record(_ deliveries: [Delivery]) {
        var counts: [String: Int] = [:]
        for delivery in deliveries { counts[fairShare.lane(ofQueue: delivery.queue), default: 0] += 1 }
        for (lane, count) in counts { lanes[lane]?.increment(by: count) }
    }
}
