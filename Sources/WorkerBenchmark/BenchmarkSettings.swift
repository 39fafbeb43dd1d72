import CustomerWorker
import Foundation
import WorkerTracing

/// What one `customer-worker bench` invocation measures.
public struct BenchmarkSettings: Sendable {
    /// Commands published in each mode.
    public var messages = 20_000
    /// `customer-worker run` processes sharing the queue and the database in worker mode.
    public var replicas = 1
    /// Share of the commands (percent, 0..<100) that repeat an earlier command byte for byte.
    public var duplicatesPercent = 0.0
    /// Open loop at this many commands per second; nil → closed loop (saturation).
    public var rate: Double?
    /// Queue every command before the consumers start, and time first reply to last reply.
    public var backlog = false
    /// Customers written into the database before the worker starts.
    public var preload = 0
    /// Unacknowledged commands per consumer, for the workers and the relay alike.
    public var prefetch = WorkerConfiguration().prefetch
    /// Size of each command body in bytes; nil → the natural size of the generated commands.
    public var messageSize: Int?
    public var amqpURL = "amqp://guest:guest@127.0.0.1:5672/%2f"
    /// The workers' database (`DATABASE_URL` syntax); nil → a fresh SQLite file in the run's folder.
    public var database: String?
    /// The `customer-worker` executable to start; nil → this process's own executable.
    public var workerBinary: String?
    /// Keep the temporary folder (database, worker logs) instead of deleting it.
    public var keepFiles = false
    /// A run fails when no reply arrived for this long.
    public var replyTimeout: Duration = .seconds(60)
    /// The workers' `DATABASE_SYNCHRONOUS` (full or normal); nil → the worker's default (full).
    public var databaseSynchronous: String?
    /// The workers' `OTEL_EXPORTER_OTLP_ENDPOINT`: tracing on, exporting there; nil → off.
    public var otlpEndpoint: String?
    /// The workers' `BATCH_LINGER_MS` (0...1000); nil → the worker's default.
    public var batchLingerMilliseconds: Int?
    /// The workers' `FAIR_SHARE_SHARDS` (0: fair share off); the relays always consume one queue.
    public var fairShareShards = WorkerConfiguration().fairShareShards
    /// Quorum queues bound to the events exchange beside the inspection queue, each read (with
    /// acks) by its own consumer, in both modes: the fan-out of production, where services read
    /// the replies.
    public var downstreamQueues = 0
    /// Count the workers' system calls (perf stat on each) during the measured run.
    public var syscalls = false
    /// Tenants mode (`TenantsRun`): `messages` is one heavy merchant's flood, beside light merchants.
    public var tenants = false
    /// Tenants mode: merchants publishing at `lightRate` each, alone and beside the flood.
    public var lightMerchants = 1
    /// Tenants mode: commands per second of each light merchant.
    public var lightRate = 20.0
    /// Tenants mode: how long the light merchants publish alone before the flood.
    public var unloadedSeconds = 5.0

    public init() {}

    /// Every broken rule, as lines for the user; empty when the settings are usable.
    public var problems: [String] {
        var problems: [String] = []
        if messages < 1 { problems.append("--messages must be at least 1") }
        if !(1...64).contains(replicas) { problems.append("--replicas must be 1...64") }
        if !(0..<100).contains(duplicatesPercent) { problems.append("--duplicates must be a percentage in 0..<100") }
        if let rate, !(rate > 0 && rate.isFinite) { problems.append("--rate must be a positive number of messages per second") }
        if !(1...65_535).contains(prefetch) { problems.append("--prefetch must be 1...65535") }
        if backlog && rate != nil { problems.append("--backlog and --rate exclude each other: a backlog is queued at once") }
        if preload < 0 { problems.append("--preload must not be negative") }
        if let databaseSynchronous, !["full", "normal"].contains(databaseSynchronous) {
            problems.append("--database-synchronous must be full or normal")
        }
        if let otlpEndpoint, let problem = TracingBackend.problem("OTEL_EXPORTER_OTLP_ENDPOINT", otlpEndpoint) {
            problems.append("--otlp-endpoint \(problem)")
        }
        if let batchLingerMilliseconds, !(0...1000).contains(batchLingerMilliseconds) {
            problems.append("--batch-linger-ms must be 0...1000")
        }
        if !(0...FairShare.maximumShards).contains(fairShareShards) {
            problems.append("--fair-share-shards must be 0...\(FairShare.maximumShards)")
        }
        if tenants {
            if !(1...16).contains(lightMerchants) { problems.append("--light-merchants must be 1...16") }
            if !(lightRate > 0 && lightRate <= 1000) { problems.append("--light-rate must be more than 0 and at most 1000 commands/s") }
            if !(unloadedSeconds > 0 && unloadedSeconds <= 600) { problems.append("--unloaded-seconds must be more than 0 and at most 600") }
            if backlog || rate != nil || duplicatesPercent > 0 || preload > 0 || messageSize != nil || downstreamQueues > 0 || syscalls {
                problems.append("--tenants takes none of --backlog, --rate, --duplicates, --preload, --message-size, --downstream-queues, --syscalls")
            }
        }
        if !(0...8).contains(downstreamQueues) { problems.append("--downstream-queues must be 0...8") }
        if !(replyTimeout > .zero && replyTimeout <= .seconds(86_400)) { problems.append("--reply-timeout must be 1...86400 seconds") }
        if let messageSize, !CommandShape.sizes.contains(messageSize) {
            problems.append("--message-size must be \(CommandShape.sizes.lowerBound)...\(CommandShape.sizes.upperBound) bytes")
        }
        return problems
    }
}
