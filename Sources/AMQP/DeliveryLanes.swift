/// Deliveries received and not handed out yet, one first-in-first-out lane per consumer, handed
/// out in round robin across the lanes. With one consumer this is one queue in arrival order; with
/// several (the worker consumes every shard of fair share, each with its own prefetch window), a
/// batch takes one delivery from each lane in turn, so a command of a quiet queue is not handed
/// out behind everything a busy queue's window already put on the socket. Order within a lane
/// (one queue, so one merchant's commands) is kept. Pure: no I/O.
struct DeliveryLanes {
    /// Lanes by consumer tag, in the order their consumers first delivered.
    private var lanes: [(consumerTag: String, deliveries: [Delivery])] = []
    /// Each lane's index in `lanes`, by consumer tag: a delivery finds its lane without a search
    /// (a worker under fair share consumes up to 65 queues).
    private var laneIndex: [String: Int] = [:]
    /// The lane the last delivery joined: deliveries come in runs from one consumer, and comparing
    /// one tag costs less than hashing it (2,100 instructions a command, `scripts/instructions.sh`).
    private var lastLane = 0
    /// The lane that goes first in the next `take`: each take starts one lane further, so no lane
    /// is always first.
    private var nextLane = 0
    /// Whether the last take was the quiet lanes' alone: the next one is then a turn of every lane.
    private var lastTookQuietLanes = false
    private(set) var count = 0

    var isEmpty: Bool { count == 0 }

    mutating func append(_ delivery: Delivery) {
        count += 1
        if lastLane < lanes.count, lanes[lastLane].consumerTag == delivery.consumerTag {
            lanes[lastLane].deliveries.append(delivery)
        } else if let index = laneIndex[delivery.consumerTag] {
            lastLane = index
            lanes[index].deliveries.append(delivery)
        } else {
            lastLane = lanes.count
            laneIndex[delivery.consumerTag] = lanes.count
            lanes.append((delivery.consumerTag, [delivery]))
        }
    }

    /// A lane holding at most this many deliveries beside a busier one is a quiet lane: a light
    /// merchant's few commands beside a bulk import's shard.
    static let quietLaneDepth = 4

    /// Up to `maximum` deliveries, one lane after the other in turn; but while a quiet lane waits
    /// beside a busy one, every other take is the quiet lanes' deliveries alone. A light
    /// merchant's command then waits for the batch already in the store and a batch of its own,
    /// not for a full batch of the busy lane's (issue 27, BENCHMARKS.md); the busy lane keeps its
    /// full batches and loses at most one short transaction per batch of its own.
    mutating func take(_ maximum: Int) -> [Delivery] {
        let total = min(maximum, count)
        guard total > 0 else { return [] }
        defer { removeEmptyLanes() }
        let busy = lanes.indices.filter { !lanes[$0].deliveries.isEmpty }
        let quiet = busy.filter { lanes[$0].deliveries.count <= Self.quietLaneDepth }
        if !lastTookQuietLanes, !quiet.isEmpty, quiet.count < busy.count {
            lastTookQuietLanes = true
            var taken: [Delivery] = []
            for lane in quiet where taken.count < total {
                let share = min(lanes[lane].deliveries.count, total - taken.count)
                taken += lanes[lane].deliveries.prefix(share)
                lanes[lane].deliveries.removeFirst(share)
            }
            count -= taken.count
            return taken
        }
        lastTookQuietLanes = false
        count -= total
        if busy.count == 1 {
            let lane = busy[0]
            let taken = Array(lanes[lane].deliveries.prefix(total))
            lanes[lane].deliveries.removeFirst(total)
            return taken
        }
        let first = nextLane % lanes.count
        nextLane = first + 1
        let rotation = Array(lanes.indices[first...]) + Array(lanes.indices[..<first])
        var taken: [Delivery] = []
        taken.reserveCapacity(total)
        var depth = 0
        var takenPerLane = [Int](repeating: 0, count: lanes.count)
        while taken.count < total {
            for lane in rotation where taken.count < total && depth < lanes[lane].deliveries.count {
                taken.append(lanes[lane].deliveries[depth])
                takenPerLane[lane] += 1
            }
            depth += 1
        }
        for lane in lanes.indices where takenPerLane[lane] > 0 { lanes[lane].deliveries.removeFirst(takenPerLane[lane]) }
        return taken
    }

    /// Every delivery held, in the order the broker sent them (by tag); the lanes are emptied.
    mutating func removeAll() -> [Delivery] {
        let all = lanes.flatMap(\.deliveries).sorted { $0.tag.value < $1.tag.value }
        lanes.removeAll()
        laneIndex.removeAll()
        lastLane = 0
        count = 0
        return all
    }

    /// Drops the lanes a take emptied, and indexes the others again.
    private mutating func removeEmptyLanes() {
        let before = lanes.count
        lanes.removeAll { $0.deliveries.isEmpty }
        guard lanes.count != before else { return }
        lastLane = 0
        laneIndex = Dictionary(uniqueKeysWithValues: lanes.enumerated().map { ($0.element.consumerTag, $0.offset) })
    }
}

/// The delivery tags of the current channel that the broker delivered for acknowledgement and the
/// client has not settled yet, in ascending order (a channel numbers its deliveries upwards). It
/// says when `basic.ack` with `multiple` is safe: only when every unsettled tag up to it is one
/// being acknowledged. Deliveries handed out out of order (`DeliveryLanes`) would otherwise be
/// acknowledged before they were handled. Pure: no I/O.
struct UnsettledTags {
    private var tags: [UInt64] = []

    var count: Int { tags.count }

    mutating func delivered(_ tag: UInt64) {
        // A channel numbers upwards, so this appends; a tag out of order (none seen) is placed.
        if let last = tags.last, last >= tag {
            tags.insert(tag, at: tags.firstIndex { $0 >= tag } ?? tags.count)
        } else {
            tags.append(tag)
        }
    }

    /// The channel is gone: the broker requeued everything it had delivered.
    mutating func reset() { tags.removeAll() }

    /// `tag` settled on its own, or with every tag up to it (`multiple`).
    mutating func settled(_ tag: UInt64, multiple: Bool) {
        if multiple {
            tags.removeAll { $0 <= tag }
        } else if let index = tags.firstIndex(of: tag) {
            tags.remove(at: index)
        }
    }

    /// How to acknowledge exactly `acked`: one `basic.ack` with `multiple` up to `upTo` for the
    /// longest run of the oldest unsettled tags that are all being acknowledged (when it holds
    /// more than one), then the others one by one. Tags not unsettled (settled already, or of no
    /// acknowledged delivery) are left out: acknowledging them again is a channel error.
    mutating func acknowledge(_ acked: [UInt64]) -> (upTo: UInt64?, singles: [UInt64]) {
        let acking = Set(acked)
        let run = tags.firstIndex { !acking.contains($0) } ?? tags.count
        let upTo = run > 1 ? tags[run - 1] : nil
        let singles = tags[(upTo == nil ? 0 : run)...].filter { acking.contains($0) }
        tags.removeAll { acking.contains($0) }
        return (upTo, singles)
    }
}
