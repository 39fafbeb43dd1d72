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

    /// The AMQP messages that carry one reply: to the events exchange, and to the command's
    /// `reply_to` (through the default exchange, which includes direct reply-to) when it has one
    /// that `replyTo` allows. The events copy is always first.
    public func replyMessages(for command: MessageProperties, reply: ReplyRecord, timestamp: UInt64) -> [OutgoingMessage] {
        var headers: [String: FieldValue] = ["x-replayed": .bool(reply.replayed)]
        if let key = reply.idempotencyKey { headers["x-idempotency-key"] = .string(key) }
        let properties = MessageProperties(
            contentType: "application/json", headers: headers, persistent: true,
            correlationID: command.correlationID ?? command.messageID, messageID: reply.messageID,
            timestamp: timestamp, type: reply.type.rawValue, appID: appID
        )
        var messages = [OutgoingMessage(exchange: names.eventsExchange, routingKey: reply.routingKey, body: reply.body, properties: properties)]
        if case .allowed(let replyTo) = self.replyTo.decide(command.replyTo) {
            messages.append(OutgoingMessage(exchange: "", routingKey: replyTo, body: reply.body, properties: properties))
        }
        return messages
    }
}
