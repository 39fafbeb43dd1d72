import AMQP
import CustomerWorker
import Foundation
import Logging

/// Fresh names for everything one mode of one run declares (`bench.<random>.<mode>.…`), so runs
/// never see each other's messages, and the queues to delete afterwards.
struct BenchTopology: Sendable {
    let configuration: WorkerConfiguration

    init(runID: String, mode: String, amqpURL: String, prefetch: Int) {
        var configuration = WorkerConfiguration()
        configuration.amqpURL = amqpURL
        configuration.prefetch = prefetch
        let prefix = "bench.\(runID).\(mode)"
        configuration.names.commandExchange = "\(prefix).commands"
        configuration.names.commandQueue = "\(prefix).create"
        configuration.names.deadLetterExchange = "\(prefix).dead-letter"
        configuration.names.deadLetterQueue = "\(prefix).create.dead"
        configuration.names.eventsExchange = "\(prefix).events"
        configuration.names.repliesQueue = "\(prefix).replies"
        self.configuration = configuration
    }

    /// A new run id: eight lowercase hex digits.
    static func newRunID() -> String {
        String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(8))
    }

    /// The variables a `customer-worker run` process needs to work on this topology and `databasePath`.
    func workerEnvironment(databasePath: String) -> [String: String] {
        let names = configuration.names
        return [
            "AMQP_URL": configuration.amqpURL, "DATABASE_PATH": databasePath, "PREFETCH": String(configuration.prefetch),
            "COMMAND_EXCHANGE": names.commandExchange, "COMMAND_ROUTING_KEY": names.commandRoutingKey,
            "COMMAND_QUEUE": names.commandQueue, "DEAD_LETTER_EXCHANGE": names.deadLetterExchange,
            "DEAD_LETTER_QUEUE": names.deadLetterQueue, "EVENTS_EXCHANGE": names.eventsExchange,
            "REPLIES_QUEUE": names.repliesQueue, "REPLIES_BINDING_KEY": names.repliesBindingKey, "LOG_LEVEL": "warning",
        ]
    }

    /// A session on this topology's broker, named for `rabbitmqctl list_connections`.
    func session(_ role: String, logger: Logger) throws -> AMQPSession {
        var amqp = try configuration.amqpConfiguration
        amqp.connectionName = "customer-worker bench \(role)"
        return AMQPSession(configuration: amqp, recovery: RecoveryPolicy(maximumAttempts: 3), logger: logger, name: "bench \(role)")
    }

    /// Deletes the queues (with whatever they still hold). `AMQPSession` has no exchange.delete, so
    /// the run's exchanges stay behind; with their queues gone they route nothing.
    func deleteQueues(logger: Logger) async {
        guard let session = try? session("cleanup", logger: logger) else { return }
        let names = configuration.names
        for queue in [names.commandQueue, names.deadLetterQueue, names.repliesQueue] {
            do {
                try await session.deleteQueue(queue)
            } catch {
                logger.warning("could not delete a benchmark queue", metadata: ["amqp.queue": "\(queue)", "error": "\(error)"])
            }
        }
        await session.close()
    }
}
