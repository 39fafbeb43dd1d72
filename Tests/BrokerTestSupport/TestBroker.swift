import AMQP
import ChildProcess
import Foundation
import Logging

/// The private broker the tests talk to: `scripts/test.sh` starts it and exports `AMQP_URL` and
/// `BROKER_PORT`. Without them the defaults of `scripts/broker.sh start` are used.
public enum TestBroker {
    public static let environment = ProcessInfo.processInfo.environment

    public static var url: String { environment["AMQP_URL"] ?? "amqp://guest:guest@127.0.0.1:5673/%2f" }

    public static var isCI: Bool { environment["CI"] == "true" }

    /// The RabbitMQ line of the broker, as `scripts/test.sh` and `scripts/broker.sh` name it:
    /// `3.10` (Debian 12's, the default) or `4` (4.x, from the server root).
    public static var rabbitMQ: String { environment["RABBITMQ"].flatMap { $0.isEmpty ? nil : $0 } ?? "3.10" }
    public static var isRabbitMQ4: Bool { rabbitMQ.hasPrefix("4") }

    /// The three-node cluster of `scripts/broker.sh cluster start` (`scripts/test.sh` exports it):
    /// its URLs, comma-separated.
    public static var clusterURL: String? { environment["AMQP_CLUSTER_URL"].flatMap { $0.isEmpty ? nil : $0 } }

    /// Whether cluster tests should run: when the cluster was started, and always under CI.
    public static var clusterEnabled: Bool { isCI || clusterURL != nil }

    /// Whether broker tests should run: when the broker answers, and always under CI, where an
    /// unreachable broker must fail the tests instead of skipping them.
    public static let enabled: Bool = isCI || isReachable

    public static var isReachable: Bool {
        guard let configuration = try? ConnectionConfiguration(url: url) else { return false }
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(configuration.port).bigEndian)
        inet_pton(AF_INET, configuration.host == "localhost" ? "127.0.0.1" : configuration.host, &address.sin_addr)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    public static var port: Int { (try? ConnectionConfiguration(url: url))?.port ?? 5673 }

    public static func configuration(name: String, heartbeat: Duration = .seconds(30)) throws -> ConnectionConfiguration {
        var configuration = try ConnectionConfiguration(url: url)
        configuration.connectionName = name
        configuration.heartbeat = heartbeat
        return configuration
    }

    /// Fast recovery so tests do not wait long after a forced disconnect.
    public static let quickRecovery = RecoveryPolicy(initialDelay: .milliseconds(50), maximumDelay: .seconds(1))

    public static func session(_ name: String, heartbeat: Duration = .seconds(30),
                               recovery: RecoveryPolicy = quickRecovery) async throws -> AMQPSession {
        let session = AMQPSession(configuration: try configuration(name: name, heartbeat: heartbeat), recovery: recovery,
                                  logger: logger(name), name: name)
        TestResources.onExit("AMQP session \(name)") { await session.close() }
        try await session.connect()
        return session
    }

    public static func logger(_ label: String) -> Logger {
        var logger = Logger(label: label)
        logger.logLevel = environment["TEST_LOG_LEVEL"].flatMap(Logger.Level.init(rawValue:)) ?? .critical
        return logger
    }

    /// A name no other test uses, for queues, exchanges and connections.
    public static func uniqueName(_ prefix: String) -> String {
        "\(prefix).\(UUID().uuidString.prefix(8).lowercased())"
    }

    public static var repositoryRoot: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    /// Runs `scripts/broker.sh` with this broker's port and returns its standard output.
    @discardableResult
    public static func brokerScript(_ arguments: [String], port: Int? = nil) async throws -> String {
        try await run(brokerScriptPath, arguments, environment: ["BROKER_PORT": String(port ?? self.port)])
    }

    private static var brokerScriptPath: String { repositoryRoot.appendingPathComponent("scripts/broker.sh").path }

    /// Closes the broker side of every connection with this client-provided name.
    public static func closeConnections(named name: String, port: Int? = nil) async throws -> Int {
        // RabbitMQ 3.10 cannot list user_provided_name; the client properties carry the name.
        let listing = try await brokerScript(["ctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties"], port: port)
        let needle = "{\"connection_name\",\"\(name)\"}"
        let pids = listing.split(separator: "\n").compactMap { line -> String? in
            line.contains(needle) ? line.split(separator: "\t").first.map(String.init) : nil
        }
        for pid in pids {
            try await brokerScript(["ctl", "close_connection", pid, "closed by a test"], port: port)
        }
        return pids.count
    }

    /// Runs a command to completion and returns its standard output; throws if it failed.
    ///
    /// `ChildProcess` and waitpid rather than Foundation's `Process`: the broker the script starts
    /// is a daemon that inherits descriptors, and `Process` then never sees the script end.
    @discardableResult
    public static func run(_ executable: String, _ arguments: [String], environment extra: [String: String] = [:]) async throws -> String {
        let (status, output) = try await runCapturing(executable, arguments, environment: extra, errorsToOutput: false)
        guard status == 0 else { throw ScriptError(command: ([executable] + arguments).joined(separator: " "), status: status) }
        return output
    }

    /// Runs a command to completion: its exit status (128 + signal if killed) and its output.
    /// Polls for the exit instead of blocking in waitpid, so the cooperative thread stays free
    /// for what the command may be waiting on (a worker running in this process).
    public static func runCapturing(_ executable: String, _ arguments: [String], environment extra: [String: String] = [:],
                                    errorsToOutput: Bool = true) async throws -> (status: Int32, output: String) {
        let outputPath = FileManager.default.temporaryDirectory.appendingPathComponent("script-\(UUID().uuidString).out").path
        defer { try? FileManager.default.removeItem(atPath: outputPath) }
        let pid = try spawn(executable, arguments, environment: extra, output: outputPath, errorsToOutput: errorsToOutput)
        let finished: Int32?
        do {
            finished = try await ChildProcess.waitForExit(pid, timeout: .seconds(600))
        } catch {
            kill(pid, SIGKILL)  // cancelled: the command must not outlive its test
            _ = try? await ChildProcess.waitForExit(pid, timeout: .seconds(5))
            throw error
        }
        guard let exitCode = finished else {
            kill(pid, SIGKILL)
            _ = try? await ChildProcess.waitForExit(pid, timeout: .seconds(5))
            throw ScriptError(command: ([executable] + arguments).joined(separator: " ") + " (did not finish within 600 s)", status: -1)
        }
        return (exitCode, (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "")
    }

    /// Starts a process with standard output appended to `output` (and standard error too when
    /// `errorsToOutput`), standard input from /dev/null, and this environment plus `extra`. It is
    /// killed when the test process ends, even by SIGKILL (`ChildProcess`); it carries
    /// `CUSTOMER_WORKER_TEST_CHILD=<the test broker's port>`, by which `scripts/test.sh` finds
    /// what an earlier run on the same broker left (and leaves other runs' processes alone).
    public static func spawn(_ executable: String, _ arguments: [String], environment extra: [String: String] = [:],
                             output: String, errorsToOutput: Bool) throws -> pid_t {
        let environment = ProcessInfo.processInfo.environment.merging(extra) { $1 }
            .merging(["CUSTOMER_WORKER_TEST_CHILD": String(port)]) { $1 }
        return try ChildProcess.spawn(executable, arguments, environment: environment, output: output, errorsToOutput: errorsToOutput)
    }

    public struct ScriptError: Error, CustomStringConvertible {
        public let command: String
        public let status: Int32

        public init(command: String, status: Int32) {
            self.command = command
            self.status = status
        }
        public var description: String { "\(command) exited with \(status)" }
    }
}

/// Resident memory of this process, from /proc (Linux).
public enum ProcessMemory {
    public static func residentBytes(pid: Int32? = nil) -> Int? {
        statusField("VmRSS", pid: pid)
    }

    public static func peakResidentBytes(pid: Int32? = nil) -> Int? {
        statusField("VmHWM", pid: pid)
    }

    private static func statusField(_ name: String, pid: Int32?) -> Int? {
        let path = "/proc/\(pid.map(String.init) ?? "self")/status"
        guard let status = try? String(contentsOfFile: path, encoding: .utf8) else { return nil }
        for line in status.split(separator: "\n") where line.hasPrefix(name + ":") {
            let kilobytes = line.split(separator: " ").dropFirst().first.flatMap { Int($0) }
            return kilobytes.map { $0 * 1024 }
        }
        return nil
    }
}
