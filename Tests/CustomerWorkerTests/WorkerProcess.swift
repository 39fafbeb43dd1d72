import BrokerTestSupport
import ChildProcess
import Foundation
import Synchronization

/// A real `customer-worker run` process, for the tests where process death matters. It dies with
/// the test process (`ChildProcess`), and the test's `TestResources` scope kills it when the test
/// ends, however it ends.
final class WorkerProcess: Sendable {
    let pid: pid_t
    /// The exit status once reaped (the pid may be reused afterwards: never signal it again).
    private let exit = Mutex<Int32?>(nil)
    /// The HTTP listener's port once found (`listeningPort`).
    private let listening = Mutex<Int?>(nil)

    /// The executable built next to the test bundle by `swift build --build-tests`.
    static var executable: String { built("customer-worker") }

    /// `customer-worker run` with fault injection (`FaultInjection`), built beside the worker's.
    static var faultInjectingExecutable: String { built("customer-worker-faults") }

    /// The benchmark's executable, built beside the worker's.
    static var benchExecutable: String { built("customer-worker-bench") }
    static var relayExecutable: String { built("customer-worker-relay") }

    private static func built(_ name: String) -> String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [bundle.appendingPathComponent(name),
                          bundle.deletingLastPathComponent().appendingPathComponent(name)]
        return (candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]).path
    }

    init(environment: [String: String], logFile: String, faultInjecting: Bool = false) throws {
        pid = faultInjecting
            ? try TestBroker.spawn(Self.faultInjectingExecutable, [], environment: environment, output: logFile, errorsToOutput: true)
            : try TestBroker.spawn(Self.executable, ["run"], environment: environment, output: logFile, errorsToOutput: true)
        TestResources.onExit("worker process \(pid) (log \(logFile))") { [self] in await terminate() }
    }

    /// Another `customer-worker` command (e.g. a replay to kill midway); `faultInjecting`: the
    /// test-only executable's version of it (`customer-worker-faults`).
    init(_ arguments: [String], environment: [String: String], logFile: String, faultInjecting: Bool = false) throws {
        pid = try TestBroker.spawn(faultInjecting ? Self.faultInjectingExecutable : Self.executable, arguments, environment: environment,
                                   output: logFile, errorsToOutput: true)
        TestResources.onExit("customer-worker \(arguments.first ?? "") \(pid) (log \(logFile))") { [self] in await terminate() }
    }

    /// The port of the HTTP listener of a worker started with `HTTP_PORT=0` (the kernel picks a
    /// free one, so no test races another for a port). Waits until the process listens; nil
    /// when it ends first or `timeout` passes. Read from /proc, whatever the log level.
    func listeningPort(timeout: Duration = .seconds(60)) async throws -> Int? {
        if let port = listening.withLock({ $0 }) { return port }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            if let port = Self.listeningPort(of: pid) {
                listening.withLock { $0 = port }
                return port
            }
            if try await waitForExit(timeout: .zero) != nil { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
        return nil
    }

    /// The port of a TCP socket `pid` listens on and this process does not: its socket inodes
    /// (/proc/PID/fd) matched with the rows of /proc/net/tcp and tcp6 in state LISTEN (0A). A
    /// worker opens one listening socket, its HTTP listener (every other socket of its own is a
    /// client's). A socket this test process shares with it would be one it inherited (another
    /// test's server): `cw_spawn` prevents that where the kernel can, and it is skipped anyway.
    static func listeningPort(of pid: pid_t) -> Int? {
        guard let own = socketInodes(of: pid) else { return nil }
        let inodes = own.subtracting(socketInodes(of: getpid()) ?? [])
        for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
            guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
            // sl local_address rem_address st tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode …
            for row in text.split(separator: "\n").dropFirst() {
                let fields = row.split(separator: " ")
                guard fields.count > 9, fields[3] == "0A", inodes.contains(fields[9]),
                      let port = fields[1].split(separator: ":").last.flatMap({ Int($0, radix: 16) }) else { continue }
                return port
            }
        }
        return nil
    }

    /// The inodes of the sockets `pid` holds open; nil when it has no /proc entry (it ended).
    private static func socketInodes(of pid: pid_t) -> Set<Substring>? {
        let descriptors = "/proc/\(pid)/fd"
        guard let entries = try? FileManager.default.contentsOfDirectory(atPath: descriptors) else { return nil }
        return Set(entries.compactMap { entry -> Substring? in
            guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "\(descriptors)/\(entry)"),
                  target.hasPrefix("socket:["), target.hasSuffix("]") else { return nil }
            return Substring(target.dropFirst(8).dropLast())
        })
    }

    func signal(_ signal: Int32) {
        exit.withLock { if $0 == nil { _ = kill(pid, signal) } }
    }

    /// The exit status, or nil if the process is still running after `timeout`. A death by
    /// signal is reported as 128 + the signal number, as shells do.
    func waitForExit(timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = exit.withLock({ status in status ?? ChildProcess.exitStatus(pid).map { status = $0; return $0 } }) {
                return status
            }
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    /// Kills the process if it still runs and reaps it (the clean-up after every test).
    func terminate() async {
        signal(SIGKILL)
        _ = try? await waitForExit(timeout: .seconds(10))
    }
}
