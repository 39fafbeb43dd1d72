import AMQP
import CreateCustomer
import CustomerStore
import CustomerWorker
import Foundation
import Logging

/// `customer-worker bench`: the broker's ceiling for the worker's traffic, then real worker
/// processes on the same broker with the same commands, in one invocation.
public enum Benchmark {
    /// Runs both modes and reports them. Throws when a mode cannot finish (a reply never came, a
    /// worker failed); a finished run whose checks failed lists them in `problems`.
    public static func run(_ settings: BenchmarkSettings, logger: Logger,
                           progress: @escaping @Sendable (String) -> Void) async throws -> BenchmarkReport {
        if let problem = settings.problems.first { throw BenchmarkError.setupFailed(problem) }
        // `--syscalls`: perf and setpriv, found once, before anything runs.
        let systemCallTools = settings.syscalls ? try SystemCallCounter.tools().get() : nil
        return try await withRunDirectory(settings, progress: progress) { runID, directory in
            let run = BenchmarkRun(settings: settings, runID: runID, directory: directory, systemCallTools: systemCallTools,
                                   logger: logger, progress: progress)
            return try await run.measure()
        }
    }

    /// A fresh run id and its temporary folder (database, worker logs) for `body`; the folder is
    /// removed afterwards unless `--keep`.
    private static func withRunDirectory<T>(_ settings: BenchmarkSettings, progress: @Sendable (String) -> Void,
                                            _ body: (String, URL) async throws -> T) async throws -> T {
        let runID = BenchTopology.newRunID()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("customer-worker-bench-\(runID)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer {
            if settings.keepFiles {
                progress("kept \(directory.path)")
            } else {
                try? FileManager.default.removeItem(at: directory)
            }
        }
        return try await body(runID, directory)
    }

    /// `--tenants`: a heavy merchant's flood beside light merchants, with fair share and without
    /// (`TenantsRun`). Throws when a run cannot finish; problems (counts) are in the report.
    public static func runTenants(_ settings: BenchmarkSettings, logger: Logger,
                                  progress: @escaping @Sendable (String) -> Void) async throws -> TenantsReport {
        if let problem = settings.problems.first { throw BenchmarkError.setupFailed(problem) }
        return try await withRunDirectory(settings, progress: progress) { runID, directory in
            var storeLogger = logger
            storeLogger.logLevel = max(logger.logLevel, .error)
            let database = try await BenchDatabase.create(
                url: settings.database ?? directory.appendingPathComponent("customers.sqlite").path, logger: storeLogger)
            let run = TenantsRun(settings: settings, runID: runID, directory: directory, workerBinary: workerBinary(settings),
                                 logger: logger, progress: progress)
            let outcome = await capture { try await run.measure(database) }
            await database.close()
            return try outcome.get()
        }
    }

    /// `--worker-binary`, else the `customer-worker` in the bench executable's own folder (both
    /// products land in the same build folder).
    static func workerBinary(_ settings: BenchmarkSettings) -> String {
        settings.workerBinary ?? besideThisExecutable("customer-worker")
    }

    /// The executable `name` in this executable's own folder.
    static func besideThisExecutable(_ name: String) -> String {
        let own = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.path
        return URL(fileURLWithPath: own).deletingLastPathComponent().appendingPathComponent(name).path
    }
}

/// One invocation's state: its settings, workload and database.
private struct BenchmarkRun: Sendable {
    let settings: BenchmarkSettings
    let runID: String
    let directory: URL
    let logger: Logger
    let progress: @Sendable (String) -> Void
    let workload: Workload
    /// perf and setpriv under `--syscalls`, else nil.
    let systemCallTools: (perf: String, setpriv: String)?

    init(settings: BenchmarkSettings, runID: String, directory: URL, systemCallTools: (perf: String, setpriv: String)?,
         logger: Logger, progress: @escaping @Sendable (String) -> Void) {
        self.systemCallTools = systemCallTools
        self.settings = settings
        self.runID = runID
        self.directory = directory
        self.logger = logger
        self.progress = progress
        workload = Workload(messages: settings.messages, duplicatesPercent: settings.duplicatesPercent,
                            shape: CommandShape(size: settings.messageSize))
    }

    var prefetch: Int { settings.prefetch }

    var pacing: Pacing {
        if settings.backlog { return .backlog }
        return settings.rate.map { .openLoop(perSecond: $0) } ?? .closedLoop(window: max(2048, 4 * prefetch * settings.replicas))
    }

    var pacingName: String {
        switch pacing {
        case .closedLoop: "closed-loop"
        case .openLoop: "open-loop"
        case .backlog: "backlog"
        }
    }

    func measure() async throws -> BenchmarkReport {
        // The pool's own chatter (e.g. a lease racing its start) is not the benchmark's business.
        var storeLogger = logger
        storeLogger.logLevel = max(logger.logLevel, .error)
        let database = try await BenchDatabase.create(
            url: settings.database ?? directory.appendingPathComponent("customers.sqlite").path, logger: storeLogger)
        let outcome = await capture { try await measure(database) }
        await database.close()
        return try outcome.get()
    }

    private func measure(_ database: BenchDatabase) async throws -> BenchmarkReport {
        let sample = try await database.sampleReply(workload.shape)
        var preloadSeconds: Double?
        if settings.preload > 0 {
            progress("preloading \(settings.preload) customers…")
            let start = ContinuousClock.now
            try await database.preload(settings.preload, shape: workload.shape)
            preloadSeconds = (ContinuousClock.now - start).seconds
            progress("preloaded in \(String(format: "%.1f", preloadSeconds ?? 0)) s")
        }

        progress("ceiling: relaying \(workload.count) commands…")
        let ceiling = try await measureCeiling(apiKey: database.apiKey, reply: sample)
        progress("worker: \(settings.replicas) process(es), \(workload.count) commands…")
        let (workers, workerDownstreamProblems) = try await measureWorkers(database)

        let window: Int? = if case .closedLoop(let window) = pacing { window } else { nil }
        let setup = BenchmarkReport.Setup(
            messages: workload.count, replicas: settings.replicas, duplicates: workload.duplicates,
            duplicatesPercent: settings.duplicatesPercent, pacing: pacingName,
            rate: settings.rate, window: window, prefetch: prefetch, commandBytes: workload.body(at: 0).count,
            replyBytes: sample.body.count, preload: settings.preload, preloadSeconds: preloadSeconds,
            database: database.location.redacted, downstreamQueues: settings.downstreamQueues)
        let ceilingFigures = BenchmarkReport.Mode(ceiling.result, cpuSeconds: ceiling.cpuSeconds)
        return BenchmarkReport(
            machine: .current, setup: setup, ceiling: ceilingFigures, worker: workers,
            ratio: workers.mode.messagesPerSecond / ceilingFigures.messagesPerSecond,
            problems: problems(workers) + ceiling.downstreamProblems + workerDownstreamProblems)
    }

    /// What the worker-mode counts should be, given the workload.
    private func problems(_ worker: BenchmarkReport.Worker) -> [String] {
        var problems: [String] = []
        if worker.replies != workload.count { problems.append("\(worker.replies) replies for \(workload.count) commands") }
        if worker.failed > 0 { problems.append("\(worker.failed) CustomerCreateFailed replies") }
        if worker.created != workload.uniqueCommands || worker.replayed != workload.duplicates {
            problems.append("\(worker.created) created and \(worker.replayed) replayed replies; expected "
                + "\(workload.uniqueCommands) and \(workload.duplicates)")
        }
        if worker.customers != worker.customersExpected {
            problems.append("\(worker.customers) customers in the database; expected \(worker.customersExpected)")
        }
        return problems
    }

    private func topology(_ mode: String) -> BenchTopology {
        BenchTopology(runID: runID, mode: mode, amqpURL: settings.amqpURL, prefetch: prefetch,
                      downstreamQueues: settings.downstreamQueues, fairShareShards: mode == "ceiling" ? 0 : settings.fairShareShards)
    }

    // MARK: Ceiling

    /// One relay per worker replica, so both modes have the same number of consumers. Returns the
    /// run and the relays' CPU time.
    private func measureCeiling(apiKey: String, reply: ReplyRecord)
        async throws -> (result: LoadResult, cpuSeconds: Double, downstreamProblems: [String]) {
        try await withGenerator(topology("ceiling"), apiKey: apiKey) { topology, generator, readers in
            let executable = Benchmark.besideThisExecutable("customer-worker-relay")
            let relays = try (1...settings.replicas).map { index in
                try Relay(topology: topology, reply: reply, executable: executable, directory: directory, index: index)
            }
            if case .backlog = pacing { try await generator.fill() }
            let result = try await measure(alongside: relays.map { relay in { try await relay.run() } }) {
                if case .backlog = pacing {} else { try await generator.warmUp(count: 1, firstNumber: 0) }
                return try await generator.run()
            }
            return (result, relays.map(\.usage.cpuSeconds).reduce(0, +), await downstreamProblems(readers, mode: "ceiling"))
        }
    }

    /// Each downstream reader should take every reply of the run; it gets the reply timeout to
    /// catch up after the last one reached the load generator.
    private func downstreamProblems(_ readers: [DownstreamReader], mode: String) async -> [String] {
        var problems: [String] = []
        for reader in readers {
            let taken = await reader.waitFor(workload.count, timeout: settings.replyTimeout)
            if taken < workload.count { problems.append("\(mode): \(reader.queue) took \(taken) of \(workload.count) replies") }
        }
        return problems
    }

    // MARK: Worker

    private func measureWorkers(_ database: BenchDatabase) async throws -> (BenchmarkReport.Worker, downstreamProblems: [String]) {
        try await withGenerator(topology("worker"), apiKey: database.apiKey) { topology, generator, readers in
            let configuration = topology.configuration
            let backlog = if case .backlog = pacing { true } else { false }
            // A backlog is queued before the workers start, and they take it at once: count first.
            let beforeBacklog = try await database.customerCount()
            if backlog { try await generator.fill() }
            let fleet = try WorkerFleet(
                binary: Benchmark.workerBinary(settings), count: settings.replicas,
                environment: topology.workerEnvironment(databaseURL: database.url)
                    .merging(settings.databaseSynchronous.map { ["DATABASE_SYNCHRONOUS": $0] } ?? [:]) { $1 }
                    .merging(settings.otlpEndpoint.map { ["OTEL_EXPORTER_OTLP_ENDPOINT": $0] } ?? [:]) { $1 }
                    .merging(settings.batchLingerMilliseconds.map { ["BATCH_LINGER_MS": "\($0)"] } ?? [:]) { $1 },
                settingNames: WorkerConfiguration.settings.map(\.variable), logDirectory: directory,
                countSystemCalls: systemCallTools)
            let outcome = await capture {
                // A backlog is counted from the worker's start (its start-up included), a live
                // run from its first measured command.
                if backlog { try await fleet.countSystemCalls(true) }
                try await fleet.open(timeout: .seconds(10))
                if !backlog {
                    try await fleet.waitUntilConnected(brokerPort: try configuration.amqpConfiguration.port, timeout: .seconds(60))
                    try await generator.warmUp(count: settings.replicas, firstNumber: 0)
                }
                let before = backlog ? beforeBacklog : try await database.customerCount()
                let serverBefore = database.serverCPUSeconds()
                if !backlog { try await fleet.countSystemCalls(true) }
                // A worker that dies fails the run at once instead of after the reply timeout.
                let result = try await measure(alongside: [{ try await fleet.watch() }]) {
                    try await generator.run()
                }
                try await fleet.countSystemCalls(false)
                let usage = fleet.usage()
                let serverCPU = database.serverCPUSeconds().map { $0 - (serverBefore ?? 0) }
                try await fleet.stop(timeout: configuration.shutdownTimeout + .seconds(5))
                let counted = try fleet.perfCounts()
                let perCommand = { (count: Int) in Double(count) / Double(max(1, result.replies)) }
                let worker = BenchmarkReport.Worker(
                    mode: .init(result, cpuSeconds: usage.compactMap(\.cpuSeconds).reduce(0, +)),
                    peakRSSMB: usage.map { $0.peakResidentBytes.map { Double($0) / 1e6 } },
                    cpuSeconds: usage.map(\.cpuSeconds),
                    replies: result.replies, created: result.tally.created, replayed: result.tally.replayed,
                    failed: result.tally.failed, extraReplies: result.tally.extra,
                    customersExpected: before + workload.uniqueCommands, customers: try await database.customerCount(),
                    databaseServerCPUSeconds: serverCPU,
                    systemCallsPerCommand: counted.map { $0.systemCalls.mapValues(perCommand) },
                    contextSwitchesPerCommand: counted.map { perCommand($0.contextSwitches) },
                    cpuMigrationsPerCommand: counted.map { perCommand($0.cpuMigrations) })
                return (worker, await downstreamProblems(readers, mode: "worker"))
            }
            if case .failure = outcome { await fleet.killAll() }
            return try outcome.get()
        }
    }

    /// Runs `body` while `companions` (relays, a watchdog) run beside it: they are cancelled when
    /// `body` returns, and the first error of any ends the measurement.
    private func measure(alongside companions: [@Sendable () async throws -> Void],
                         _ body: @escaping @Sendable () async throws -> LoadResult) async throws -> LoadResult {
        try await withThrowingTaskGroup(of: LoadResult?.self) { group in
            for companion in companions {
                group.addTask {
                    try await companion()
                    return nil
                }
            }
            group.addTask { try await body() }
            for try await case let result? in group {
                group.cancelAll()
                return result
            }
            throw BenchmarkError.setupFailed("the measurement ended without a result")
        }
    }

    /// Runs `body` with a load generator on `topology` and its downstream readers, then closes
    /// them and deletes the topology's queues, whatever happened.
    private func withGenerator<T: Sendable>(_ topology: BenchTopology, apiKey: String,
                                            _ body: (BenchTopology, LoadGenerator, [DownstreamReader]) async throws -> T) async throws -> T {
        let outcome = await capture {
            let generator = try await LoadGenerator(topology: topology, workload: workload, apiKey: apiKey, pacing: pacing,
                                                    replyTimeout: settings.replyTimeout, logger: logger)
            var readers: [DownstreamReader] = []
            // They read from before the first command until the topology goes: a reader that
            // fails stops counting, and the run reports it short of replies.
            var reading: [Task<Void, any Error>] = []
            let result = await capture {
                for queue in topology.downstreamQueues {
                    let reader = try await DownstreamReader(topology: topology, queue: queue, commands: workload.count, logger: logger)
                    readers.append(reader)
                    reading.append(Task { try await reader.run() })
                }
                return try await body(topology, generator, readers)
            }
            for task in reading { task.cancel() }
            for task in reading { _ = await task.result }
            for reader in readers { await reader.close() }
            await generator.close()
            return try result.get()
        }
        await topology.deleteQueues(logger: logger)
        return try outcome.get()
    }
}

/// The outcome of `body`, error included.
func capture<T>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
