import AMQP
import ChildProcess
import CreateCustomer
import CustomerWorker
import Foundation
import Synchronization

/// The broker's ceiling for the worker's traffic: the worker's broker work without its domain work.
///
/// `customer-worker-relay`, a no-op relay written directly on rabbitmq-c (`CBenchRelay`), runs as a
/// process of its own, as an outside harness would run it: it consumes the command queue with the
/// worker's prefetch, publishes the worker's own reply for each command (same bytes, properties and
/// events exchange, persistent, confirmed) and acknowledges with `multiple` once the replies are
/// confirmed. It costs a few microseconds of CPU per message, so what limits it is the broker,
/// which is what the ceiling is meant to measure. Like the workers, it dies with the benchmark.
final class Relay: Sendable {
    private let executable: String
    private let arguments: [String]
    private let environment: [String: String]
    private let output: URL
    private let figures = Mutex<(relayed: Int, cpuSeconds: Double)>((0, 0))

    /// A relay for `topology`'s command queue, started by `run()`; `directory` holds the reply it
    /// sends and its output (`relay-<index>.log`).
    convenience init(topology: BenchTopology, reply: ReplyRecord, executable: String, directory: URL, index: Int) throws {
        // The reply as the worker carries it to the events exchange.
        let event = ReplyEnvelope(command: MessageProperties(), reply: reply, configuration: topology.configuration, timestamp: 0).events
        try self.init(configuration: topology.configuration, queue: topology.configuration.names.commandQueue,
                      exchange: event.exchange, routingKey: event.routingKey, reply: reply,
                      contentType: event.properties.contentType ?? "application/json", executable: executable,
                      directory: directory, name: "relay-\(index)")
    }

    /// A relay that consumes `queue` on `configuration`'s broker with its prefetch and publishes
    /// `reply` (persistent, confirmed) for each command to `exchange` with `routingKey`, or to the
    /// command's `reply_to` when it has one (the tenants mode's probes), carrying the command's
    /// correlation id; `directory` holds the reply it sends and its output (`<name>.reply`,
    /// `<name>.log`).
    init(configuration: WorkerConfiguration, queue: String, exchange: String, routingKey: String, reply: ReplyRecord,
         contentType: String, executable: String, directory: URL, name: String) throws {
        let amqp = try configuration.amqpConfiguration
        guard amqp.tls == nil else { throw BenchmarkError.setupFailed("the no-op relay speaks plain AMQP only: use an amqp:// URL") }
        let replyFile = directory.appendingPathComponent("\(name).reply")
        try Data(reply.body).write(to: replyFile)
        self.executable = executable
        arguments = [
            amqp.host, "\(amqp.port)", amqp.user, amqp.vhost, queue, "\(configuration.prefetch)",
            exchange, routingKey, replyFile.path, reply.type.rawValue, contentType, configuration.appID,
        ] + (reply.idempotencyKey.map { [$0] } ?? [])
        // The password never goes on the command line (any user of the machine can read it).
        environment = ProcessInfo.processInfo.environment.merging(["RELAY_AMQP_PASSWORD": amqp.password]) { _, new in new }
        output = directory.appendingPathComponent("\(name).log")
    }

    /// Relays until the task is cancelled (then stops the process with SIGTERM and reads its
    /// figures); throws when the relay ended on its own, with what it said.
    func run() async throws {
        let pid: pid_t
        do {
            pid = try ChildProcess.spawn(executable, arguments, environment: environment, output: output.path, errorsToOutput: true)
        } catch {
            throw BenchmarkError.relayFailed("cannot start \(executable) (build it: swift build --product customer-worker-relay): \(error)")
        }
        var status: Int32?
        do {
            // The relay runs until it is told to stop; it ends on its own only on an error.
            while status == nil {
                status = try await ChildProcess.waitForExit(pid, timeout: .seconds(1))
            }
        } catch {
            // Cancelled: the measurement is over.
            kill(pid, SIGTERM)
            status = try? await Task { try await ChildProcess.waitForExit(pid, timeout: .seconds(15)) }.value
            if status == nil {
                kill(pid, SIGKILL)
                throw BenchmarkError.relayFailed("the relay did not stop within 15 s of SIGTERM (log \(output.path))")
            }
        }
        let said = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
        guard status == 0, let figures = Self.figures(said) else {
            throw BenchmarkError.relayFailed("the relay ended with status \(status ?? -1): \(said.trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        self.figures.withLock { $0 = figures }
    }

    /// `relayed <count> cpu_ns <nanoseconds>`, the relay's last line.
    static func figures(_ output: String) -> (relayed: Int, cpuSeconds: Double)? {
        guard let line = output.split(separator: "\n").last else { return nil }
        let words = line.split(separator: " ")
        guard words.count == 4, words[0] == "relayed", words[2] == "cpu_ns", let relayed = Int(words[1]), let nanoseconds = Double(words[3])
        else { return nil }
        return (relayed, nanoseconds / 1e9)
    }

    /// After `run()`: commands relayed and the relay's CPU time (its relaying thread, connection
    /// set-up excluded).
    var usage: (relayed: Int, cpuSeconds: Double) { figures.withLock { $0 } }
}
