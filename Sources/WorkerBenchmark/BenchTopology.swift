import AMQP
import CustomerWorker
import Foundation
import Logging

/// Fresh names for everything one mode of one run declares (`bench.<random>.<mode>.…`), so runs
/// never see each other's messages, and the queues to delete afterwards.
struct BenchTopology: Sendable {
    let configuration: WorkerConfiguration
    /// Quorum queues bound to the events exchange beside the inspection queue, one per
    /// downstream reader (`--downstream-queues`).
    let downstreamQueues: [String]

    /// `fairShareShards`: the workers' `FAIR_SHARE_SHARDS`; 0 for the ceiling, whose relay
    /// consumes the command queue alone (the broker's own limit for the senders' traffic).
    init(runID: String, mode: String, amqpURL: String, prefetch: Int, downstreamQueues: Int = 0, fairShareShards: Int = 0) {
        var configuration = WorkerConfiguration()
        configuration.amqpURL = amqpURL
        configuration.prefetch = prefetch
        configuration.fairShareShards = fairShareShards
        configuration.names = TopologyNames(prefix: "bench.\(runID).\(mode)")
        configuration.logLevel = .warning
        self.configuration = configuration
        self.downstreamQueues = (0..<downstreamQueues).map { "bench.\(runID).\(mode).downstream.\($0 + 1)" }
    }

    /// What the worker declares, and the downstream queues with their bindings.
    var topology: Topology {
        var topology = configuration.topology
        let names = configuration.names
        topology.merge(Topology(
            queues: downstreamQueues.map { .quorum($0) },
            bindings: downstreamQueues.map { .init(queue: $0, exchange: names.eventsExchange, routingKey: names.repliesBindingKey) }))
        return topology
    }

    /// A new run id: eight lowercase hex digits.
    static func newRunID() -> String {
        String(UUID().uuidString.lowercased().filter(\.isHexDigit).prefix(8))
    }

    /// The variables a `customer-worker run` process needs to work on this topology and database.
    func workerEnvironment(databaseURL: String) -> [String: String] {
        var configuration = configuration
        configuration.databaseURL = databaseURL
        return configuration.environmentVariables
    }

    /// A session on this topology's broker, named for `rabbitmqctl list_connections`.
    func session(_ role: String, logger: Logger) throws -> AMQPSession {
        var amqp = try configuration.amqpConfiguration
        amqp.connectionName = "customer-worker bench \(role)"
        return AMQPSession(configuration: amqp, recovery: RecoveryPolicy(maximumAttempts: 3), logger: logger, name: "bench \(role)")
    }

    /// Deletes the run's queues (with whatever they still hold), `extra` queues it declared
    /// beside them, and its exchanges.
    func deleteQueues(logger: Logger, also extra: [String] = []) async {
        guard let session = try? session("cleanup", logger: logger) else { return }
        for queue in configuration.topology.queues.map(\.name) + downstreamQueues + extra {
            do {
                try await session.deleteQueue(queue)
            } catch {
                logger.warning("could not delete a benchmark queue", metadata: ["amqp.queue": "\(queue)", "error": "\(error)"])
            }
        }
        for exchange in configuration.topology.exchanges.map(\.name) {
            do {
                try await session.deleteExchange(exchange)
            } catch {
                logger.warning("could not delete a benchmark exchange", metadata: ["amqp.exchange": "\(exchange)", "error": "\(error)"])
            }
        }
        await session.close()
    }
}
