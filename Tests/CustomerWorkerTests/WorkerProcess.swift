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
