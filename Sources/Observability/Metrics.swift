import CoreMetrics
import Prometheus
import Synchronization

/// The worker's metric names, as emitted through the swift-metrics API and exposed on `/metrics`.
public enum MetricName {
    /// Counter: command deliveries received from the queue (redeliveries included).
    public static let commandsReceived = "customer_worker_commands_received_total"
    /// Counter with dimensions `outcome` (created, replayed, failed) and `code` (the error code, or none).
    public static let commandsHandled = "customer_worker_commands_handled_total"
    /// Counter: commands answered from their idempotency record (the stored reply was sent again).
    public static let replays = "customer_worker_replays_total"
    /// Recorder (aggregate, a histogram): commands per batch, i.e. per database transaction.
    public static let batchSize = "customer_worker_batch_size"
    /// Timer (a histogram in seconds): delivery received → acknowledged.
    public static let handlingDuration = "customer_worker_handling_duration_seconds"
    /// Timer (a histogram in seconds): one batch's database transaction.
    public static let transactionDuration = "customer_worker_transaction_duration_seconds"
    /// Timer (a histogram in seconds): publishing a batch's replies → all of them confirmed by the broker.
    public static let confirmDuration = "customer_worker_confirm_duration_seconds"
    /// Counter with dimension `lane`: command deliveries received per queue consumed, a shard's
    /// index or `unsharded` (fair share per merchant; at most 65 values, whatever the merchants).
    public static let laneDeliveries = "customer_worker_lane_deliveries_total"
    /// Gauge: the shards of the command queue the worker consumes (`FAIR_SHARE_SHARDS`; 0: off).
    public static let fairShareShards = "customer_worker_fair_share_shards"
    /// Counter: connections to the broker re-established after a failure.
    public static let reconnects = "customer_worker_reconnects_total"
    /// Gauge: deliveries taken from the queue and not yet acknowledged.
    public static let unackedDeliveries = "customer_worker_unacked_deliveries"
    /// Counter: batch attempts that failed transiently (database busy or full, replies not confirmed).
    public static let transientFailures = "customer_worker_transient_failures_total"
    /// Counter with dimension `reason`: copies of replies to a command's `reply_to` that were not
    /// delivered: `refused` (the name is not allowed), `nacked`, `returned` (unroutable), `error`.
    public static let replyToUndelivered = "customer_worker_reply_to_undelivered_total"
    /// Gauge: 1 while the database keeps failing (the worker holds a batch, or handed it back and
    /// waits without consuming), else 0.
    public static let paused = "customer_worker_paused"
    /// Counter: store attempts that failed because the database was unavailable (busy, full, I/O).
    public static let storeFailures = "customer_worker_store_failures_total"
    /// Counter: commands handed back to the queue unspent (a copy published, the original
    /// acknowledged) because the database kept failing while the worker held them, or because a
    /// requeue would have dead-lettered them.
    public static let handedBack = "customer_worker_handed_back_total"
    /// Counter with dimension `reason`: commands the worker sent to the dead-letter queue itself:
    /// `failed` (its handling fails on its own, e.g. a stored plan out of range), `crashed` (the
    /// worker died while handling it).
    public static let deadLettered = "customer_worker_dead_lettered_total"
    /// Gauge with dimensions `session` (consumer, publisher) and `node` (host:port): 1 for the
    /// broker node each connection uses, 0 for one it used before.
    public static let amqpNode = "customer_worker_amqp_node"

    /// Every name above with its `# HELP` text.
    public static let help: [String: String] = [
        commandsReceived: "Command deliveries received from the queue, redeliveries included.",
        commandsHandled: "Commands answered, by outcome (created, replayed, failed) and error code (none when not failed).",
        replays: "Commands answered from their idempotency record with the stored reply.",
        batchSize: "Commands per batch (one database transaction, one confirm wait, one acknowledgement of exactly its commands).",
        handlingDuration: "Seconds from a delivery's arrival to its acknowledgement.",
        transactionDuration: "Seconds spent in a batch's database transaction.",
        confirmDuration: "Seconds from publishing a batch's replies until the broker confirmed them all.",
        reconnects: "Broker connections re-established after a failure.",
        unackedDeliveries: "Deliveries received and not yet acknowledged.",
        transientFailures: "Attempts at publishing a batch's replies that failed transiently and were retried or requeued.",
        replyToUndelivered: "Reply copies to a command's reply_to that were not delivered, by reason (refused, nacked, returned, error).",
        paused: "1 while the database keeps failing: the worker holds a batch, or has handed it back and waits without consuming.",
        storeFailures: "Store attempts that failed because the database was unavailable (busy, full, read-only, I/O).",
        handedBack: "Commands handed back to the queue as copies (original acknowledged, no delivery spent) while the database kept failing.",
        deadLettered: "Commands the worker sent to the dead-letter queue, by reason (failed, crashed).",
        amqpNode: "1 for the broker node each connection (session) uses, 0 for one it used before.",
    ]
}

/// A Prometheus registry with the swift-metrics factory that feeds it, configured with the
/// worker's histogram buckets, and the text exposition of everything recorded.
public final class MetricsRegistry: Sendable {
    /// Buckets of every Timer: 0.5 ms … 10 s.
    public static let durationBuckets: [Duration] = [
        .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
        .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500),
        .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10),
    ]

    /// Buckets of ``MetricName/batchSize``: powers of two, 1 … 1024.
    public static let batchSizeBuckets: [Double] = (0...10).map { Double(1 << $0) }

    /// The underlying swift-prometheus registry.
    public let registry: PrometheusCollectorRegistry
    /// The swift-metrics factory writing into ``registry``; pass it to `MetricsSystem.bootstrap`,
    /// or use it directly (`Counter(label:dimensions:factory:)`) where a global bootstrap is unwanted.
    public let factory: PrometheusMetricsFactory

    public init() {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.defaultDurationHistogramBuckets = Self.durationBuckets
        factory.valueHistogramBuckets[MetricName.batchSize] = Self.batchSizeBuckets
        self.registry = registry
        self.factory = factory
    }

    private static let bootstrapped = Mutex<MetricsRegistry?>(nil)

    /// Creates the process-wide registry and installs its factory with `MetricsSystem.bootstrap`.
    ///
    /// swift-metrics allows a single bootstrap per process: the first call bootstraps, later calls
    /// return the same registry.
    public static func bootstrap() -> MetricsRegistry {
        bootstrapped.withLock { shared in
            if let shared { return shared }
            let registry = MetricsRegistry()
            MetricsSystem.bootstrap(registry.factory)
            shared = registry
            return registry
        }
    }

    /// Appends the Prometheus text exposition (format 0.0.4) to `buffer`.
    public func emit(into buffer: inout [UInt8]) {
        buffer.append(contentsOf: render().utf8)
    }

    /// The Prometheus text exposition (format 0.0.4): metric families sorted by name, each with a
    /// `# HELP` line when ``MetricName/help`` knows the name.
    public func render() -> String {
        Self.decorate(registry.emitToString())
    }

    /// Sorts the families of a registry's output by name and adds the known `# HELP` lines to the
    /// families that have none (the swift-metrics factory registers every metric without help).
    static func decorate(_ exposition: String) -> String {
        var families: [(name: String, lines: [Substring])] = []
        var pendingHelp: [Substring] = []
        for line in exposition.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("# HELP ") {
                pendingHelp.append(line)
            } else if line.hasPrefix("# TYPE ") || families.isEmpty {
                let name = line.hasPrefix("# TYPE ") ? String(line.dropFirst("# TYPE ".count).prefix { $0 != " " }) : ""
                if pendingHelp.isEmpty, let help = MetricName.help[name] {
                    pendingHelp.append("# HELP \(name) \(escapeHelp(help))")
                }
                families.append((name, pendingHelp + [line]))
                pendingHelp = []
            } else {
                families[families.count - 1].lines.append(line)
            }
        }
        var output = ""
        for line in families.sorted(by: { $0.name < $1.name }).flatMap(\.lines) + pendingHelp {
            output += line
            output += "\n"
        }
        return output
    }

    private static func escapeHelp(_ help: String) -> String {
        help.replacingBackslashesAndNewlines()
    }
}

extension String {
    fileprivate func replacingBackslashesAndNewlines() -> String {
        var escaped = ""
        for character in self {
            switch character {
            case "\\": escaped += "\\\\"
            case "\n": escaped += "\\n"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
