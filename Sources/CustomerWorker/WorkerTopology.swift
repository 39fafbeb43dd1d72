import AMQP
import CreateCustomer

extension WorkerConfiguration {
    /// Everything the worker (and the CLI) declares, idempotently, at start and after reconnects.
    public var topology: Topology {
        Topology(
            exchanges: [
                .init(name: names.commandExchange, type: "direct"),
                .init(name: names.deadLetterExchange, type: "fanout"),
                .init(name: names.eventsExchange, type: "topic"),
            ],
            queues: [
                .quorum(names.commandQueue, deliveryLimit: deliveryLimit, deadLetterExchange: names.deadLetterExchange),
                .quorum(names.deadLetterQueue),
                // Classic: an inspection copy needs no replication, and drop-head keeps it bounded.
                .init(name: names.repliesQueue, arguments: [
                    "x-queue-type": "classic", "x-max-length": .int(Int64(repliesMaxLength)), "x-overflow": "drop-head",
                ]),
            ],
            bindings: [
                .init(queue: names.commandQueue, exchange: names.commandExchange, routingKey: names.commandRoutingKey),
                .init(queue: names.deadLetterQueue, exchange: names.deadLetterExchange, routingKey: ""),
                .init(queue: names.repliesQueue, exchange: names.eventsExchange, routingKey: names.repliesBindingKey),
            ]
        )
    }

    /// The AMQP messages that carry one reply (see `ReplyEnvelope`); the events copy is first.
    public func replyMessages(for command: MessageProperties, reply: ReplyRecord, timestamp: UInt64) -> [OutgoingMessage] {
        ReplyEnvelope(command: command, reply: reply, configuration: self, timestamp: timestamp).messages
    }
}
