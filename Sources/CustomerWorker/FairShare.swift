import AMQP

/// Fair share per merchant (issue 27): what the broker does so that one merchant's backlog never
/// holds another merchant's commands back. Pure: names and topology only, no I/O.
///
/// The senders' path is unchanged (command exchange, routing key, headers). The command
/// exchange no longer routes to the command queue itself but, through an exchange-to-exchange
/// binding, to a consistent-hash exchange (`rabbitmq_consistent_hash_exchange`, shipped with
/// RabbitMQ 3.10 and 4.x) that hashes each command's `x-api-key` header, without reading its
/// body, to one of `shards` quorum queues (`<command queue>.0` …). A merchant's commands all land
/// in one shard, in order; a worker consumes every shard, each with its own prefetch window, so
/// the broker hands it commands from every shard that has some: a heavy merchant's backlog waits
/// in its own shard, and a light merchant in another shard waits behind at most one prefetch
/// window of it, not behind its backlog.
///
/// The command queue stays: it is no longer bound (the binding is removed), but the worker keeps
/// consuming it, so what an earlier version left there is drained, and so are hand-backs of
/// commands taken from it. With `shards == 0` fair share is off: the command queue is bound to
/// the command exchange as before, and the exchange-to-exchange binding is removed.
public struct FairShare: Sendable, Hashable {
    /// The header hashed: every command carries its merchant's secret key there.
    public static let hashHeader = "x-api-key"
    public static let exchangeType = "x-consistent-hash"
    /// The broker plugin that provides `exchangeType`.
    public static let plugin = "rabbitmq_consistent_hash_exchange"
    /// Most shards a worker consumes (each is a quorum queue and a consumer).
    public static let maximumShards = 64
    /// A metric label for the command queue, which is no shard.
    public static let unshardedLane = "unsharded"

    public let shards: Int
    public let names: TopologyNames

    public init(shards: Int, names: TopologyNames) {
        precondition((0...Self.maximumShards).contains(shards), "shards out of range")
        self.shards = shards
        self.names = names
    }

    public var isOn: Bool { shards > 0 }

    /// The consistent-hash exchange between the command exchange and the shards.
    public var exchange: String { "\(names.commandExchange).fair" }

    public func shardQueue(_ index: Int) -> String { "\(names.commandQueue).\(index)" }

    public var shardQueues: [String] { (0..<shards).map(shardQueue) }

    /// What the worker consumes, each with its own prefetch: every shard, then the command queue.
    public var consumedQueues: [String] { shardQueues + [names.commandQueue] }

    /// The metric label of the queue a command came from: its shard's index, or `unsharded`.
    /// Bounded by `maximumShards` + 1 values, whatever the number of merchants.
    public func lane(ofQueue queue: String?) -> String {
        guard isOn, let queue, queue.hasPrefix(names.commandQueue + ".") else { return Self.unshardedLane }
        let suffix = queue.dropFirst(names.commandQueue.count + 1)
        guard let index = Int(suffix), (0..<shards).contains(index), String(index) == suffix else { return Self.unshardedLane }
        return String(index)
    }

    /// Every lane label, for metrics created once.
    public var lanes: [String] { (0..<shards).map(String.init) + [Self.unshardedLane] }

    /// The command path, from the command exchange to the queues the worker consumes. Each
    /// shard is a quorum queue with the command queue's delivery limit and dead-letter exchange,
    /// so poison isolation and dead-lettering work per command as before.
    func commandTopology(deliveryLimit: Int) -> Topology {
        let direct = Topology.Binding(queue: names.commandQueue, exchange: names.commandExchange, routingKey: names.commandRoutingKey)
        let intoShards = Topology.ExchangeBinding(destination: exchange, source: names.commandExchange, routingKey: names.commandRoutingKey)
        let commandQueue = Topology.Queue.quorum(names.commandQueue, deliveryLimit: deliveryLimit, deadLetterExchange: names.deadLetterExchange)
        guard isOn else {
            // Off: the exchange-to-exchange binding an earlier run with fair share made goes.
            return Topology(queues: [commandQueue], bindings: [direct], removedExchangeBindings: [intoShards])
        }
        return Topology(
            exchanges: [.init(name: exchange, type: Self.exchangeType, arguments: ["hash-header": .string(Self.hashHeader)])],
            queues: [commandQueue] + shardQueues.map {
                .quorum($0, deliveryLimit: deliveryLimit, deadLetterExchange: names.deadLetterExchange)
            },
            // The binding key is the shard's weight: equal shares of the hash space.
            bindings: shardQueues.map { .init(queue: $0, exchange: exchange, routingKey: "1") },
            exchangeBindings: [intoShards],
            removedBindings: [direct]
        )
    }
}

extension FairShare {
    /// Declares the topology on `session`; a broker without the plugin (it closes the connection
    /// with `503 COMMAND_INVALID - invalid exchange type 'x-consistent-hash'`) is reported as
    /// what to do about it, not as a lost connection.
    public static func declare(_ topology: Topology, on session: AMQPSession) async throws {
        do {
            try await session.declare(topology)
        } catch {
            throw PluginMissing(underlying: error) ?? error
        }
    }

    /// The broker does not know the consistent-hash exchange type: its plugin is not enabled.
    public struct PluginMissing: Error, CustomStringConvertible {
        public let underlying: AMQPError

        init?(underlying: AMQPError) {
            switch underlying {
            case .connectionClosedByBroker(_, let text), .channelClosedByBroker(_, _, let text):
                guard text.contains("invalid exchange type"), text.contains(FairShare.exchangeType) else { return nil }
            default:
                return nil
            }
            self.underlying = underlying
        }

        public var description: String {
            "the broker has no exchange type \(FairShare.exchangeType), which fair share per merchant (FAIR_SHARE_SHARDS) needs: "
                + "enable its plugin on every node (rabbitmq-plugins enable \(FairShare.plugin); online, no restart), "
                + "or set FAIR_SHARE_SHARDS=0 to run without fair share (\(underlying))"
        }
    }
}

