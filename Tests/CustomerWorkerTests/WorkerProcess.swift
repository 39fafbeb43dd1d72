import BrokerTestSupport
import Foundation

/// A real `customer-worker run` process, for the tests where process death matters.
final class WorkerProcess: Sendable {
    let pid: pid_t

    /// The executable built next to the test bundle by `swift build --build-tests`.
    static var executable: String { built("customer-worker") }

    /// The benchmark's executable, built beside the worker's.
    static var benchExecutable: String { built("customer-worker-bench") }

    private static func built(_ name: String) -> String {
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        let candidates = [bundle.appendingPathComponent(name),
                          bundle.deletingLastPathComponent().appendingPathComponent(name)]
        return (candidates.first { FileManager.default.isExecutableFile(atPath: $0.path) } ?? candidates[0]).path
    }

    init(environment: [String: String], logFile: String) throws {
        pid = try TestBroker.spawn(Self.executable, ["run"], environment: environment, output: logFile, errorsToOutput: true)
    }

    /// Another `customer-worker` command (e.g. a replay to kill midway).
    init(_ arguments: [String], environment: [String: String], logFile: String) throws {
        pid = try TestBroker.spawn(Self.executable, arguments, environment: environment, output: logFile, errorsToOutput: true)
    }

    func signal(_ signal: Int32) { kill(pid, signal) }

    /// The exit status, or nil if the process is still running after `timeout`. A death by
    /// signal is reported as 128 + the signal number, as shells do.
    func waitForExit(timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            var status: Int32 = 0
            let result = waitpid(pid, &status, WNOHANG)
            if result == pid {
                return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
            }
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(50))
        }
    }

    /// Kills the process if it still runs (cleanup after a failed test).
    func terminate() async {
        signal(SIGKILL)
        _ = try? await waitForExit(timeout: .seconds(5))
    }
}
