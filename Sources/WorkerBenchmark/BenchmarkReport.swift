import Foundation

/// Every figure of one invocation: the machine, what ran, the ceiling, the worker, and what the
/// worker-mode checks found wrong (empty when the run is valid).
public struct BenchmarkReport: Sendable, Codable {
    public struct Machine: Sendable, Codable {
        public var cores: Int
        public var memoryGiB: Double
        public var system: String

        static var current: Machine {
            let info = ProcessInfo.processInfo
            return Machine(cores: info.activeProcessorCount, memoryGiB: Double(info.physicalMemory) / 1_073_741_824,
                           system: info.operatingSystemVersionString)
        }
    }

    public struct Setup: Sendable, Codable {
        public var messages: Int
        public var replicas: Int
        public var duplicates: Int
        public var duplicatesPercent: Double
        /// "closed-loop", "open-loop" or "backlog".
        public var pacing: String
        /// Commands per second (open loop only).
        public var rate: Double?
        /// Commands waiting for their reply at most (closed loop only).
        public var window: Int?
        public var prefetch: Int
        public var commandBytes: Int
        public var replyBytes: Int
        public var preload: Int
        public var preloadSeconds: Double?
        /// The workers' database: a SQLite path or a PostgreSQL URL without its password.
        public var database: String
        /// Downstream queues bound to the events exchange (each read by its own consumer).
        public var downstreamQueues: Int
    }

    public struct Mode: Sendable, Codable {
        public var messagesPerSecond: Double
        public var seconds: Double
        /// Publish → reply; nil for a backlog, where it would measure time spent queued.
        public var latencyMs: LatencySummary?
        /// CPU time of the relays (ceiling) or the worker processes, per command answered. The
        /// workers' figure counts from their start, so it includes start-up and the warm-up.
        public var cpuMicrosecondsPerMessage: Double

        init(_ result: LoadResult, cpuSeconds: Double) {
            messagesPerSecond = result.messagesPerSecond
            seconds = result.elapsed.seconds
            latencyMs = result.latency.count > 0 ? result.latency.summary : nil
            cpuMicrosecondsPerMessage = result.replies > 0 ? cpuSeconds * 1e6 / Double(result.replies) : 0
        }
    }

    public struct Worker: Sendable, Codable {
        public var mode: Mode
        /// Peak resident set (VmHWM) of each worker process just before SIGTERM, in MB (10^6 bytes).
        public var peakRSSMB: [Double?]
        /// CPU time (user + system) of each worker process from its start (warm-up included) to just
        /// before SIGTERM: on a shared machine a steadier figure of the worker's cost than its speed.
        public var cpuSeconds: [Double?]
        public var replies: Int
        public var created: Int
        public var replayed: Int
        public var failed: Int
        public var extraReplies: Int
        public var customersExpected: Int
        public var customers: Int
        /// CPU time of the PostgreSQL server processes during the measured run (PostgreSQL only).
        public var databaseServerCPUSeconds: Double?
        /// `--syscalls`: the workers' system calls per command answered, by name, summed over
        /// the workers: a live run's measured commands only; a backlog's from the workers' start.
        public var systemCallsPerCommand: [String: Double]?
        /// `--syscalls`: how often the workers' threads were switched out per command answered
        /// (a thread blocking to hand work to another, or preempted), counted as the system calls are.
        public var contextSwitchesPerCommand: Double?
        /// `--syscalls`: how often the workers' threads moved to another core per command answered.
        public var cpuMigrationsPerCommand: Double?
    }

    public var machine: Machine
    public var setup: Setup
    public var ceiling: Mode
    public var worker: Worker
    /// Worker messages/s over ceiling messages/s.
    public var ratio: Double
    /// What the worker-mode checks found wrong; a run with problems exits non-zero.
    public var problems: [String]

    public func json() -> String { reportJSON(self) }

    /// The human-readable table.
    public var table: String {
        func number(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
        func column(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
        func row(_ label: String, _ mode: Mode) -> String {
            let latencies = mode.latencyMs.map { [$0.p50, $0.p90, $0.p99, $0.p999, $0.max].map { number($0, 2) } }
                ?? Array(repeating: "-", count: 5)
            return label.padding(toLength: 16, withPad: " ", startingAt: 0) + column(number(mode.messagesPerSecond, 0), 9)
                + latencies.map { column($0, 9) }.joined() + column(number(mode.cpuMicrosecondsPerMessage, 1), 12)
        }
        let pacing = if setup.pacing == "backlog" {
            "backlog (queued first, timed from first to last reply)"
        } else {
            setup.rate.map { "open loop at \(number($0, 0)) msg/s" } ?? "closed loop (window \(setup.window ?? 0))"
        }
        func list(_ values: [Double?], _ digits: Int) -> String { values.map { $0.map { number($0, digits) } ?? "?" }.joined(separator: ", ") }
        var lines = [
            "machine: \(machine.cores) cores, \(number(machine.memoryGiB, 1)) GiB, \(machine.system)",
            "\(setup.messages) commands of \(setup.commandBytes) B (replies \(setup.replyBytes) B), \(pacing), "
                + "\(setup.replicas) replica(s), \(setup.duplicates) duplicates (\(number(setup.duplicatesPercent, 1))%), prefetch \(setup.prefetch)"
                + (setup.downstreamQueues > 0 ? ", \(setup.downstreamQueues) downstream queue(s)" : ""),
            "database: \(setup.database)",
        ]
        if setup.preload > 0 {
            lines.append("preloaded \(setup.preload) customers in \(number(setup.preloadSeconds ?? 0, 1)) s")
        }
        lines += [
            "".padding(toLength: 16, withPad: " ", startingAt: 0) + column("msg/s", 9)
                + ["p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"].map { column($0, 9) }.joined() + column("CPU µs/msg", 12),
            row("ceiling", ceiling),
            row("worker", worker.mode),
            "worker/ceiling  " + column(number(ratio, 2), 9),
            "peak RSS per worker (MB): \(list(worker.peakRSSMB, 1)); CPU seconds per worker: \(list(worker.cpuSeconds, 2))",
        ]
        if let server = worker.databaseServerCPUSeconds {
            let perCommand = server / Double(max(1, setup.messages)) * 1e6
            lines.append("PostgreSQL server CPU during the worker run: \(number(server, 2)) s (\(number(perCommand, 1)) µs per command)")
        }
        if let calls = worker.systemCallsPerCommand {
            let top = calls.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(10)
            let counted = setup.pacing == "backlog" ? "from the workers' start" : "measured run"
            lines.append("system calls per command (\(counted)): \(number(calls.values.reduce(0, +), 2)) in all; "
                + top.map { "\($0.key) \(number($0.value, 3))" }.joined(separator: ", "))
        }
        if let switches = worker.contextSwitchesPerCommand, let migrations = worker.cpuMigrationsPerCommand {
            lines.append("context switches per command: \(number(switches, 3)); moves to another core: \(number(migrations, 3))")
        }
        lines += [
            "replies: \(worker.replies) (\(worker.created) created, \(worker.replayed) replayed, \(worker.failed) failed, "
                + "\(worker.extraReplies) extra); customers: \(worker.customers) of \(worker.customersExpected) expected",
        ]
        lines += problems.map { "PROBLEM: \($0)" }
        return lines.joined(separator: "\n")
    }
}

/// A report as one JSON object, keys sorted (what `--json` prints).
func reportJSON(_ report: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return (try? String(decoding: encoder.encode(report), as: UTF8.self)) ?? "{}"
}
