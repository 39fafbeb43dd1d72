import ChildProcess
import Foundation
import Synchronization

/// Real `customer-worker run` processes sharing one queue and one database, each writing its
/// output to its own log file. They die with the benchmark, however it ends (`ChildProcess`).
struct WorkerFleet: Sendable {
    private let processes: [Member]
    private let logFiles: [URL]

    /// One worker process; its exit status once reaped (its pid is never signalled after that).
    /// Under `--syscalls` the process spawned is perf, and the worker its child.
    private final class Member: Sendable {
        /// The process spawned and reaped: the worker, or perf running it.
        let pid: pid_t
        let counter: SystemCallCounter?
        private let exit = Mutex<Int32?>(nil)
        private let child = Mutex<pid_t?>(nil)

        init(pid: pid_t, counter: SystemCallCounter?) {
            self.pid = pid
            self.counter = counter
        }

        /// 128 + the signal number for a death by signal; nil while it runs. Under perf, the
        /// worker's exit status (perf ends with it).
        var exitStatus: Int32? {
            exit.withLock { status in status ?? ChildProcess.exitStatus(pid).map { status = $0; return $0 } }
        }
        var isRunning: Bool { exitStatus == nil }

        /// The worker's own pid (for /proc and signals); nil while perf has not started it yet.
        var workerPID: pid_t? {
            guard counter != nil else { return pid }
            return child.withLock { known in
                if known == nil, isRunning {
                    known = readProcFile("/proc/\(pid)/task/\(pid)/children").split(separator: " ").first.flatMap { pid_t($0) }
                }
                return known
            }
        }

        /// To the worker; to perf as well for SIGKILL, or when the worker is not started yet.
        func signal(_ signal: Int32) {
            let worker = workerPID
            exit.withLock {
                guard $0 == nil else { return }
                if let worker { _ = kill(worker, signal) }
                if worker != pid, signal == SIGKILL || worker == nil { _ = kill(pid, signal) }
            }
        }
    }

    /// Starts `count` workers of `binary` with `environment` added to this process's environment
    /// (minus the worker settings it might carry, which would make the workers differ from the ceiling).
    /// With `countSystemCalls` (perf and setpriv), each runs under perf and waits at its gate
    /// until `open`.
    init(binary: String, count: Int, environment: [String: String], settingNames: [String], logDirectory: URL,
         countSystemCalls tools: (perf: String, setpriv: String)? = nil) throws {
        var inherited = ProcessInfo.processInfo.environment
        for name in settingNames { inherited[name] = nil }
        var processes: [Member] = []
        var logFiles: [URL] = []
        for index in 1...count {
            let log = logDirectory.appendingPathComponent("worker-\(index).log")
            do {
                let counter = try tools.map { try SystemCallCounter(perf: $0.perf, setpriv: $0.setpriv, directory: logDirectory, index: index) }
                let (executable, arguments) = counter?.command(binary, ["run"]) ?? (binary, ["run"])
                let pid = try ChildProcess.spawn(executable, arguments, environment: inherited.merging(environment) { _, new in new },
                                                 output: log.path, errorsToOutput: true)
                processes.append(Member(pid: pid, counter: counter))
            } catch {
                processes.forEach { $0.signal(SIGKILL) }
                throw BenchmarkError.worker("cannot start worker \(index) (\(binary), log \(log.path)): \(error)")
            }
            logFiles.append(log)
        }
        self.processes = processes
        self.logFiles = logFiles
    }

    /// Lets workers that wait at their gate (under `--syscalls`) start.
    func open(timeout: Duration) async throws {
        for (index, process) in processes.enumerated() {
            do { try await process.counter?.open(timeout: timeout) } catch { throw process.isRunning ? error : exited(index) }
        }
    }

    /// Switches system-call counting on or off in every worker (no-op without `--syscalls`).
    func countSystemCalls(_ on: Bool) async throws {
        for (index, process) in processes.enumerated() {
            do {
                try await process.counter?.send(on ? "enable" : "disable", timeout: .seconds(10))
            } catch {
                // perf that ended (it could not count, say) says why in the worker's log.
                throw process.isRunning ? error : exited(index)
            }
        }
    }

    /// What perf counted while counting was on, summed over the workers, once they have exited;
    /// nil without `--syscalls`.
    func perfCounts() throws -> PerfCounts? {
        guard processes.contains(where: { $0.counter != nil }) else { return nil }
        var total = PerfCounts()
        for process in processes {
            guard let counter = process.counter else { continue }
            total.add(try counter.counts())
        }
        return total
    }

    /// Waits until every worker holds its two broker connections (consumer and publisher). The
    /// worker opens the publisher's right before it starts consuming, so together with a warm-up
    /// reply this means every replica is attached to the queue. (`AMQPSession` cannot read a
    /// queue's consumer count, which would say so directly.)
    func waitUntilConnected(brokerPort: Int, timeout: Duration) async throws {
        let deadline = ContinuousClock.now + timeout
        for (index, process) in processes.enumerated() {
            while BrokerConnections.count(pid: process.workerPID ?? -1, port: brokerPort) < 2 {
                guard process.isRunning else { throw exited(index) }
                guard ContinuousClock.now < deadline else {
                    throw BenchmarkError.worker("worker \(index + 1) did not connect to the broker within \(timeout)\(logTail(index))")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
        }
    }

    /// Each worker's peak resident set and CPU time so far (nil fields when /proc cannot tell).
    func usage() -> [ProcessUsage] {
        processes.map { ProcessUsage(pid: $0.workerPID ?? -1) }
    }

    /// Returns when cancelled; throws as soon as a worker is no longer running.
    func watch() async throws {
        while !Task.isCancelled {
            if let index = processes.firstIndex(where: { !$0.isRunning }) { throw exited(index) }
            try? await Task.sleep(for: .milliseconds(100))
        }
    }

    /// SIGTERM to every worker; each must exit with status 0 within `timeout`.
    func stop(timeout: Duration) async throws {
        processes.forEach { $0.signal(SIGTERM) }
        let deadline = ContinuousClock.now + timeout
        for (index, process) in processes.enumerated() {
            while process.isRunning {
                guard ContinuousClock.now < deadline else {
                    process.signal(SIGKILL)
                    throw BenchmarkError.worker("worker \(index + 1) did not exit within \(timeout) of SIGTERM\(logTail(index))")
                }
                try await Task.sleep(for: .milliseconds(20))
            }
            guard process.exitStatus == 0 else { throw exited(index) }
        }
    }

    /// Stops what still runs without judging how (after another failure); waits a little for it.
    func killAll() async {
        processes.forEach { $0.signal(SIGKILL) }
        let deadline = ContinuousClock.now + .seconds(5)
        while processes.contains(where: \.isRunning), ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
    }

    private func exited(_ index: Int) -> BenchmarkError {
        let status = processes[index].exitStatus ?? -1
        let how = (129...192).contains(status) ? "signal \(status - 128)" : "exit status \(status)"  // 128 + n for signal n (1...64)
        return .worker("worker \(index + 1) ended with \(how)\(logTail(index))")
    }

    private func logTail(_ index: Int) -> String {
        guard let text = try? String(contentsOf: logFiles[index], encoding: .utf8), !text.isEmpty else { return "" }
        return "; last lines of \(logFiles[index].path):\n" + text.split(separator: "\n").suffix(10).joined(separator: "\n")
    }
}

/// What /proc (Linux) says about one process.
struct ProcessUsage: Sendable {
    /// Peak resident set (VmHWM) in bytes.
    var peakResidentBytes: Int?
    /// User plus system CPU time.
    var cpuSeconds: Double?

    init(pid: Int32) {
        if let line = readProcFile("/proc/\(pid)/status").split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
           let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) {
            peakResidentBytes = kilobytes * 1024
        }
        // Fields after the parenthesised command name: state is field 3, utime 14 and stime 15.
        if let fields = readProcFile("/proc/\(pid)/stat").split(separator: ")").last?.split(separator: " "), fields.count > 12,
           let user = Double(fields[11]), let system = Double(fields[12]) {
            cpuSeconds = (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
        }
    }
}

/// The whole of a /proc file. They report a size of 0 and hand out a page per read, so reading
/// must go on until EOF (`String(contentsOfFile:)` stops after the first page: with a few dozen
/// connections on the machine, the worker's own were past it).
private func readProcFile(_ path: String) -> String {
    guard let handle = FileHandle(forReadingAtPath: path) else { return "" }
    defer { try? handle.close() }
    return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
}

/// Established TCP connections of a process to a port, from /proc (Linux).
enum BrokerConnections {
    static func count(pid: Int32, port: Int) -> Int {
        let descriptors = "/proc/\(pid)/fd"
        let sockets = Set(((try? FileManager.default.contentsOfDirectory(atPath: descriptors)) ?? []).compactMap { entry -> Substring? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(descriptors)/\(entry)"),
                  target.hasPrefix("socket:[") else { return nil }
            return target.dropFirst("socket:[".count).dropLast()
        })
        let remotePort = ":" + String(port, radix: 16, uppercase: true).leftPadded(to: 4)
        return ["tcp", "tcp6"].reduce(0) { total, table in
            let rows = readProcFile("/proc/\(pid)/net/\(table)").split(separator: "\n").dropFirst()
            return total + rows.count { row in
                // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
                let columns = row.split(separator: " ")
                return columns.count > 9 && columns[2].hasSuffix(remotePort) && columns[3] == "01" && sockets.contains(columns[9])
            }
        }
    }
}
