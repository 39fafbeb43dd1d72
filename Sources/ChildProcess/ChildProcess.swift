import CChildProcess
import Foundation
import Synchronization

/// Processes started by this one (the tests' workers and scripts, the benchmark's workers) that
/// end when it ends, however it ends: a crash or a SIGKILL of the parent leaves no worker behind
/// to consume the next run's commands.
public enum ChildProcess {
    public struct SpawnError: Error, CustomStringConvertible {
        public let executable: String
        public let code: Int32
        public var description: String { "cannot start \(executable): \(String(cString: strerror(code)))" }
    }

    /// Starts `executable` with exactly `environment`, standard input from /dev/null and standard
    /// output appended to `output` (standard error too when `errorsToOutput`). With
    /// `diesWithParent`, the child is killed (SIGKILL) when this process ends.
    public static func spawn(_ executable: String, _ arguments: [String], environment: [String: String],
                             output: String, errorsToOutput: Bool, diesWithParent: Bool = true) throws(SpawnError) -> pid_t {
        let variables = environment.map { "\($0)=\($1)" }
        let result: (code: Int32, pid: pid_t) = SpawnerThread.shared.run {
            var cArguments: [UnsafeMutablePointer<CChar>?] = ([executable] + arguments).map { strdup($0) } + [nil]
            var cEnvironment: [UnsafeMutablePointer<CChar>?] = variables.map { strdup($0) } + [nil]
            defer { (cArguments + cEnvironment).forEach { free($0) } }
            var pid: pid_t = 0
            let code = cw_spawn(executable, &cArguments, &cEnvironment, output, errorsToOutput ? 1 : 0,
                                diesWithParent ? SIGKILL : 0, &pid)
            return (code, pid)
        }
        guard result.code == 0 else { throw SpawnError(executable: executable, code: result.code) }
        return result.pid
    }

    /// The exit status of a child that has ended (128 + the signal number for a death by signal, as
    /// shells report it), reaping it; nil while it runs.
    public static func exitStatus(_ pid: pid_t) -> Int32? {
        var status: Int32 = 0
        var result: pid_t
        repeat { result = waitpid(pid, &status, WNOHANG) } while result == -1 && errno == EINTR
        // -1 (ECHILD): reaped already or not ours; report it as ended rather than wait forever.
        guard result != 0 else { return nil }
        guard result == pid else { return -1 }
        return status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f)
    }

    /// Waits for a child to end, polling (so no thread blocks in waitpid); nil when it still runs
    /// after `timeout`.
    public static func waitForExit(_ pid: pid_t, timeout: Duration) async throws -> Int32? {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let status = exitStatus(pid) { return status }
            guard ContinuousClock.now < deadline else { return nil }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// The one thread every child is forked from. The parent-death signal fires when the *thread*
/// that forked the child ends, and the threads of Swift's cooperative pool come and go (an idle
/// one exits after a few seconds), so a child forked from one of them could be killed while its
/// parent runs. This thread lives as long as the process.
///
/// `@unchecked Sendable`: its only state, `jobs`, is a `Mutex`, and `wake` is a semaphore, which
/// is thread-safe by design.
private final class SpawnerThread: @unchecked Sendable {
    static let shared = SpawnerThread()

    private let jobs = Mutex<[@Sendable () -> Void]>([])
    private let wake = DispatchSemaphore(value: 0)

    private init() {
        let thread = Thread { [self] in
            while true {
                wake.wait()
                for job in jobs.withLock({ jobs in defer { jobs.removeAll() }; return jobs }) { job() }
            }
        }
        thread.name = "child-spawner"
        thread.start()
    }

    /// Runs `body` on this thread and returns its result. The caller waits for one fork, well
    /// under a millisecond: a bounded wait, not a blocking call of its own.
    func run<T: Sendable>(_ body: @escaping @Sendable () -> T) -> T {
        let result = Mutex<T?>(nil)
        let done = DispatchSemaphore(value: 0)
        jobs.withLock { $0.append { result.withLock { $0 = body() }; done.signal() } }
        wake.signal()
        done.wait()
        return result.withLock { $0! }
    }
}
