import CustomerDomain
import CreateCustomer
import Dispatch
import Metrics
import Observability

/// The worker's metrics, created once (metric objects are looked up through the factory, which
/// takes a lock: not something for the per-message path).
struct WorkerMetrics: Sendable {
    let received = Counter(label: MetricName.commandsReceived)
    let replays = Counter(label: MetricName.replays)
    let batchSize = Recorder(label: MetricName.batchSize, aggregate: true)
    let handling = Timer(label: MetricName.handlingDuration, preferredDisplayUnit: .seconds)
    let transaction = Timer(label: MetricName.transactionDuration, preferredDisplayUnit: .seconds)
    let confirm = Timer(label: MetricName.confirmDuration, preferredDisplayUnit: .seconds)
    let reconnects = Counter(label: MetricName.reconnects)
    let unacked = Gauge(label: MetricName.unackedDeliveries)
    let transientFailures = Counter(label: MetricName.transientFailures)
    let paused = Gauge(label: MetricName.paused)
    let storeFailures = Counter(label: MetricName.storeFailures)
    let handedBack = Counter(label: MetricName.handedBack)
    private let handled: [String: Counter]
    private let replyToUndelivered: [ReplyToFailure: Counter]
    private let deadLettered: [DeadLetterReason: Counter]

    enum ReplyToFailure: String, CaseIterable {
        case refused, nacked, returned, error
    }

    enum DeadLetterReason: String, CaseIterable {
        /// Its handling fails on its own (not because the database is unavailable).
        case failed
        /// The worker died while handling it.
        case crashed
    }

    init() {
        var handled: [String: Counter] = [:]
        let label = MetricName.commandsHandled
        handled["created"] = Counter(label: label, dimensions: [("outcome", "created"), ("code", "none")])
        handled["replayed"] = Counter(label: label, dimensions: [("outcome", "replayed"), ("code", "none")])
        for code in ErrorCode.allCases.map(\.rawValue) {
            handled[code] = Counter(label: label, dimensions: [("outcome", "failed"), ("code", code)])
        }
        self.handled = handled
        replyToUndelivered = Dictionary(uniqueKeysWithValues: ReplyToFailure.allCases.map {
            ($0, Counter(label: MetricName.replyToUndelivered, dimensions: [("reason", $0.rawValue)]))
        })
        deadLettered = Dictionary(uniqueKeysWithValues: DeadLetterReason.allCases.map {
            ($0, Counter(label: MetricName.deadLettered, dimensions: [("reason", $0.rawValue)]))
        })
        paused.record(0)
    }

    func replyToUndelivered(_ reason: ReplyToFailure, count: Int = 1) {
        replyToUndelivered[reason]?.increment(by: count)
    }

    func deadLettered(_ reason: DeadLetterReason) {
        deadLettered[reason]?.increment()
    }

    func record(_ replies: [ReplyRecord]) {
        var replayCount = 0
        for reply in replies {
            let key = reply.errorCode ?? (reply.replayed ? "replayed" : "created")
            handled[key]?.increment()
            if reply.replayed { replayCount += 1 }
        }
        if replayCount > 0 { replays.increment(by: replayCount) }
    }
}

extension Timer {
    func recordSince(_ start: ContinuousClock.Instant) {
        record(duration: ContinuousClock.now - start)
    }
}
