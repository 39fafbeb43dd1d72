import AMQP
import CreateCustomer

extension WorkerConfiguration {
    /// The dead-letter queue's `x-delivery-limit`: returns that reading it can make, in effect
    /// unlimited on RabbitMQ 3.10 and 4.x alike (see `topology`).
    public static let deadLetterReadingLimit = 1_000_000_000

    /// Everything the worker (and the CLI) declares, idempotently, at start and after reconnects.
    public var topology: Topology {
        var topology = Topology(
            exchanges: [
                .init(name: names.commandExchange, type: "direct"),
                .init(name: names.deadLetterExchange, type: "fanout"),
                .init(name: names.eventsExchange, type: "topic"),
            ],
            queues: [
                // Reading dead letters (`dead-letters list`, `show`) returns them to the queue, and
                // each return counts as a delivery. RabbitMQ 4.x gives a quorum queue without
                // x-delivery-limit a limit of 20 and, with no dead-letter exchange here, would
                // then drop them; 3.10 reads -1 (4.x's "unlimited") as "drop at the first
                // return". A limit no reading reaches means the same on both.
                .quorum(names.deadLetterQueue, deliveryLimit: Self.deadLetterReadingLimit)
                    .declaredEarlier(as: ["x-queue-type": "quorum"]),
                // Quorum, bounded by drop-head: a classic queue lives on one node, and from RabbitMQ
                // 4.0 on the broker nacks every message routed to a classic queue whose node is
                // down, which would hold every reply of every worker until that node came back.
                // Workers before this one declared it classic; a broker that has it so keeps it.
                .quorum(names.repliesQueue, maxLength: repliesMaxLength, overflow: "drop-head")
                    .declaredEarlier(as: ["x-queue-type": "classic", "x-max-length": .int(Int64(repliesMaxLength)), "x-overflow": "drop-head"]),
            ],
            bindings: [
                .init(queue: names.deadLetterQueue, exchange: names.deadLetterExchange, routingKey: ""),
                .init(queue: names.repliesQueue, exchange: names.eventsExchange, routingKey: names.repliesBindingKey),
            ]
        )
        // The command path: the command queue, and the shards when fair share is on (`FairShare`).
        let commands = fairShare.commandTopology(deliveryLimit: deliveryLimit)
        topology.exchanges += commands.exchanges
        topology.queues = commands.queues + topology.queues
        topology.bindings = commands.bindings + topology.bindings
        topology.exchangeBindings = commands.exchangeBindings
        topology.removedBindings = commands.removedBindings
        topology.removedExchangeBindings = commands.removedExchangeBindings
        return topology
    }

    /// How commands are shared out among merchants (`FAIR_SHARE_SHARDS`).
    public var fairShare: FairShare { FairShare(shards: fairShareShards, names: names) }

    /// The queues the worker consumes: the shards and the command queue, or the command queue.
    public var commandQueues: [String] { fairShare.isOn ? fairShare.consumedQueues : [names.commandQueue] }
}
