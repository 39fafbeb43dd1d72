import DatabaseURL
import ArgumentParser
import CustomerWorker
import Foundation
import Observability
import WorkerBenchmark

/// The `customer-worker-bench` executable: a program of its own, so the worker's binary carries no
/// relay or histogram.
@main
struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "customer-worker-bench",
        abstract: "Measure the worker against the broker's own ceiling: messages/s, latency, peak RSS.",
        discussion: """
            Runs two modes on one broker with the same commands: the ceiling (a relay written on \
            rabbitmq-c with the worker's prefetch, reply, confirms and acks, but no domain work) and the worker (real \
            `customer-worker run` processes on a fresh SQLite database, or on --database). Every queue and exchange gets a \
            fresh bench.<id>. name and the queues are deleted at the end. Exits non-zero when replies or \
            customers do not add up.
            """)

    @Option(help: "Commands per mode.") var messages = 20_000
    @Option(help: "Worker processes sharing the queue and the database.") var replicas = 1
    @Option(help: "Percentage of commands that repeat an earlier command (0..<100).") var duplicates = 0.0
    @Option(help: "Open loop at this many commands/s (default: closed loop, saturation).") var rate: Double?
    @Flag(help: "Queue every command before the consumers (relays, workers) start; time first reply to last reply.")
    var backlog = false
    @Option(help: "Customers written into the database before the run.") var preload = 0
    @Option(help: "Unacknowledged commands per consumer, workers and relay alike (default: the worker's).")
    var prefetch = WorkerConfiguration().prefetch
    @Option(help: "Bytes per command body (default: the natural size, about 230).") var messageSize: Int?
    @Flag(help: "Print one JSON object with every figure instead of the table.") var json = false
    @Option(help: "Broker URL (env AMQP_URL; default \(Redaction.redactingCredentials(in: WorkerConfiguration().amqpURL))).") var amqpURL: String?
    @Option(help: ArgumentHelp(
        "The workers' database: a SQLite path or postgres://user:password@host:port/database (env DATABASE_URL; default: a fresh SQLite file). A new merchant keeps the run's customers apart.",
        valueName: "url"))
    var database: String?
    @Option(help: ArgumentHelp("The customer-worker executable to start (default: the customer-worker beside this executable).", valueName: "path"))
    var workerBinary: String?
    @Flag(help: "Keep the temporary folder (database, worker logs).") var keep = false
    @Option(help: "Seconds without a reply after which a run fails.") var replyTimeout = 60
    @Option(help: "The workers' DATABASE_SYNCHRONOUS: full (default) or normal.") var databaseSynchronous: String?
    @Option(help: ArgumentHelp("The workers' OTEL_EXPORTER_OTLP_ENDPOINT: trace every command and export there (default: tracing off).", valueName: "url"))
    var otlpEndpoint: String?
    @Option(name: .customLong("batch-linger-ms"), help: "The workers' BATCH_LINGER_MS: how long a batch waits for more commands after the first (default: the worker's).")
    var batchLingerMilliseconds: Int?
    @Option(help: "The workers' FAIR_SHARE_SHARDS: shards of the command queue by merchant (0: fair share off; default: the worker's).")
    var fairShareShards = WorkerConfiguration().fairShareShards
    @Option(help: "Quorum queues bound to the events exchange beside the inspection queue, each read with acks by its own consumer, in both modes (0...8): the fan-out of production.")
    var downstreamQueues = 0
    @Flag(help: "Run each worker under perf stat and report its system calls per command, by name, and its context switches per command (needs perf: apt-get install linux-perf).")
    var syscalls = false
    @Flag(help: "Tenants mode: --messages commands of one heavy merchant at once, beside light merchants publishing at a steady rate; with fair share (--fair-share-shards) and with the single queue, on fresh queues; reports the light merchants' latency alone and in the flood, and the heavy merchant's rate.")
    var tenants = false
    @Option(help: "Tenants mode: light merchants, each outside the heavy merchant's shard (1...16).") var lightMerchants = 1
    @Option(help: "Tenants mode: commands per second of each light merchant.") var lightRate = 20.0
    @Option(help: "Tenants mode: seconds the light merchants publish alone before the flood.") var unloadedSeconds = 5.0
    @OptionGroup var logging: LoggingOptions

    func run() async throws {
        var settings = BenchmarkSettings()
        settings.messages = messages
        settings.replicas = replicas
        settings.duplicatesPercent = duplicates
        settings.rate = rate
        settings.backlog = backlog
        settings.preload = preload
        settings.prefetch = prefetch
        settings.messageSize = messageSize
        settings.amqpURL = amqpURL ?? ProcessInfo.processInfo.environment["AMQP_URL"] ?? WorkerConfiguration().amqpURL
        settings.database = database ?? ProcessInfo.processInfo.environment["DATABASE_URL"].flatMap { $0.isEmpty ? nil : $0 }
        if let database = settings.database {
            do { _ = try DatabaseLocation(database) } catch { throw ValidationError(error.description) }
        }
        settings.workerBinary = workerBinary
        settings.keepFiles = keep
        settings.replyTimeout = .seconds(replyTimeout)
        settings.databaseSynchronous = databaseSynchronous
        settings.otlpEndpoint = otlpEndpoint
        settings.batchLingerMilliseconds = batchLingerMilliseconds
        settings.fairShareShards = fairShareShards
        settings.downstreamQueues = downstreamQueues
        settings.syscalls = syscalls
        settings.tenants = tenants
        settings.lightMerchants = lightMerchants
        settings.lightRate = lightRate
        settings.unloadedSeconds = unloadedSeconds
        if let problem = settings.problems.first { throw ValidationError(problem) }

        let logger = logging.bootstrap(label: "bench")
        let progress: @Sendable (String) -> Void = { line in FileHandle.standardError.write(Data("bench: \(line)\n".utf8)) }
        let printed: (text: String, problems: [String])
        if tenants {
            let report = try await Benchmark.runTenants(settings, logger: logger, progress: progress)
            printed = (json ? report.json() : report.table, report.problems)
        } else {
            let report = try await Benchmark.run(settings, logger: logger, progress: progress)
            printed = (json ? report.json() : report.table, report.problems)
        }
        print(printed.text)
        if !printed.problems.isEmpty {
            FileHandle.standardError.write(Data(printed.problems.map { "bench: FAILED: \($0)\n" }.joined().utf8))
            throw ExitCode.failure
        }
    }
}
