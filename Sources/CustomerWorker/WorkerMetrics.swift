import CustomerStore
import Dispatch
import Metrics

/// The worker's metrics, created once (metric objects are looked up through the factory, which
/// takes a lock: not something for the per-message path).
struct WorkerMetrics: Sendable {
    let received = Counter(label: "customer_worker_commands_received_total")
    let replays = Counter(label: "customer_worker_replays_total")
    let batchSize = Recorder(label: "customer_worker_batch_size", aggregate: true)
    let handling = Timer(label: "customer_worker_handling_duration_seconds", preferredDisplayUnit: .seconds)
    let transaction = Timer(label: "customer_worker_transaction_duration_seconds", preferredDisplayUnit: .seconds)
    let confirm = Timer(label: "customer_worker_confirm_duration_seconds", preferredDisplayUnit: .seconds)
    let reconnects = Counter(label: "customer_worker_reconnects_total")
    let unacked = Gauge(label: "customer_worker_unacked_deliveries")
    let transientFailures = Counter(label: "customer_worker_transient_failures_total")
    private let handled: [String: Counter]

    static let errorCodes = [
        "malformed_message", "unsupported_content_type", "message_too_large", "unauthorized", "forbidden",
        "validation_failed", "external_id_conflict",
    ]

    init() {
        var handled: [String: Counter] = [:]
        let label = "customer_worker_commands_handled_total"
        handled["created"] = Counter(label: label, dimensions: [("outcome", "created"), ("code", "none")])
        handled["replayed"] = Counter(label: label, dimensions: [("outcome", "replayed"), ("code", "none")])
        for code in Self.errorCodes {
            handled[code] = Counter(label: label, dimensions: [("outcome", "failed"), ("code", code)])
        }
        self.handled = handled
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
