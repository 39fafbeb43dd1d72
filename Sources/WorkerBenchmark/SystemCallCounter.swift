import Foundation

/// `--syscalls`: one worker run under `perf stat`, which counts every system call its threads
/// make (the kernel's `syscalls:sys_enter_*` tracepoints; threads created later inherit the
/// counters, which `perf stat -p` would miss), only while counting is switched on through perf's
/// control fifo. The worker itself waits at a gate until it is told to start, so that a backlog
/// can be counted from its very first command.
///
/// Beside the system calls, perf counts how often the worker's threads are switched out
/// (`context-switches`: each time a thread blocks to wait for another or is preempted, the
/// thread hops of a command) and moved to another core (`cpu-migrations`).
///
/// The process tree: perf → setpriv (the worker dies with perf, which dies with the bench) →
/// sh waiting at the gate → exec of the worker, in the same process.
struct SystemCallCounter: Sendable {
    private let perf: String
    private let setpriv: String
    private let control: URL
    private let acknowledgement: URL
    private let gate: URL
    /// Where perf writes its counts when it ends (CSV).
    let output: URL

    /// The executables `--syscalls` needs, or what is missing.
    static func tools() -> Result<(perf: String, setpriv: String), BenchmarkError> {
        guard let perf = executable("perf") else {
            return .failure(.setupFailed("--syscalls needs perf on the PATH (Debian: apt-get install linux-perf)"))
        }
        guard let setpriv = executable("setpriv") else {
            return .failure(.setupFailed("--syscalls needs setpriv on the PATH (Debian: util-linux)"))
        }
        return .success((perf, setpriv))
    }

    init(perf: String, setpriv: String, directory: URL, index: Int) throws {
        self.perf = perf
        self.setpriv = setpriv
        control = directory.appendingPathComponent("perf-control-\(index)")
        acknowledgement = directory.appendingPathComponent("perf-ack-\(index)")
        gate = directory.appendingPathComponent("worker-gate-\(index)")
        output = directory.appendingPathComponent("perf-stat-\(index).csv")
        for fifo in [control, acknowledgement, gate] where mkfifo(fifo.path, 0o600) != 0 {
            throw BenchmarkError.setupFailed("cannot create the fifo \(fifo.path): \(String(cString: strerror(errno)))")
        }
    }

    /// What to spawn instead of `binary arguments`.
    func command(_ binary: String, _ arguments: [String]) -> (executable: String, arguments: [String]) {
        let gated = ["--pdeathsig", "KILL", "--", "/bin/sh", "-c", #"read go < "$0" && exec "$@""#, gate.path, binary] + arguments
        return (perf, ["stat", "-D", "-1", "--control", "fifo:\(control.path),\(acknowledgement.path)",
                       "-e", "syscalls:sys_enter_*", "-e", "context-switches", "-e", "cpu-migrations", "-x", ",", "-o", output.path, "--", setpriv] + gated)
    }

    /// Lets the worker start (it waits for this before its `exec`).
    func open(timeout: Duration) async throws {
        let descriptor = try await openForWriting(gate, timeout: timeout, what: "the worker's gate")
        defer { close(descriptor) }
        guard write(descriptor, "go\n", 3) == 3 else { throw BenchmarkError.worker("cannot open the worker's gate \(gate.path)") }
    }

    /// Counting on (`enable`) or off (`disable`); returns once perf acknowledged it.
    func send(_ command: String, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        let ack = Foundation.open(acknowledgement.path, O_RDONLY | O_NONBLOCK)
        guard ack >= 0 else { throw BenchmarkError.worker("cannot open \(acknowledgement.path): \(String(cString: strerror(errno)))") }
        defer { close(ack) }
        let control = try await openForWriting(self.control, timeout: timeout, what: "perf's control fifo")
        defer { close(control) }
        let line = Array("\(command)\n".utf8)
        guard write(control, line, line.count) == line.count else {
            throw BenchmarkError.worker("cannot write to perf's control fifo \(self.control.path)")
        }
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 64)
        while !received.contains(UInt8(ascii: "\n")) {
            let count = read(ack, &chunk, chunk.count)
            if count > 0 {
                received += chunk[..<count]
                continue
            }
            guard ContinuousClock.now < deadline else {
                throw BenchmarkError.worker("perf did not acknowledge '\(command)' within \(timeout)")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The counts perf wrote when it ended: the system calls by name (those that were made only)
    /// and the scheduler's counts.
    func counts() throws -> PerfCounts {
        guard let text = try? String(contentsOf: output, encoding: .utf8) else {
            throw BenchmarkError.worker("perf wrote no counts to \(output.path)")
        }
        var counts = PerfCounts()
        // CSV lines: count,unit,event,running time,percentage,… ("<not counted>" for none).
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count > 2, let count = Int(fields[0]) else { continue }
            switch fields[2] {
            case "context-switches": counts.contextSwitches += count
            case "cpu-migrations": counts.cpuMigrations += count
            case let event where event.hasPrefix("syscalls:sys_enter_") && count > 0:
                counts.systemCalls[String(event.dropFirst("syscalls:sys_enter_".count)), default: 0] += count
            default: continue
            }
        }
        guard !counts.systemCalls.isEmpty else { throw BenchmarkError.worker("perf counted no system calls (\(output.path))") }
        return counts
    }

    /// A fifo can be opened for writing without blocking only once its reader has it open.
    private func openForWriting(_ fifo: URL, timeout: Duration, what: String) async throws -> Int32 {
        let deadline = ContinuousClock.now + timeout
        while true {
            let descriptor = Foundation.open(fifo.path, O_WRONLY | O_NONBLOCK)
            if descriptor >= 0 { return descriptor }
            guard errno == ENXIO, ContinuousClock.now < deadline else {
                throw BenchmarkError.worker("cannot open \(what) \(fifo.path) within \(timeout): \(String(cString: strerror(errno)))")
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    private static func executable(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
        return path.split(separator: ":").map { "\($0)/\(name)" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }
}

/// What perf counted for the workers while counting was on.
struct PerfCounts: Sendable, Equatable {
    /// By system call name, without the tracepoint's prefix.
    var systemCalls: [String: Int] = [:]
    var contextSwitches = 0
    var cpuMigrations = 0

    mutating func add(_ other: PerfCounts) {
        systemCalls.merge(other.systemCalls, uniquingKeysWith: +)
        contextSwitches += other.contextSwitches
        cpuMigrations += other.cpuMigrations
    }
}
