import AMQP
import CreateCustomer

/// Everything a reply carries besides its body, decided here and nowhere else: the events copy's
/// exchange, routing key, properties and headers, and whether (and where) a copy goes to the
/// command's `reply_to`.
///
/// A command property the reply cannot carry is left out rather than failing the reply: a
/// `correlation_id` longer than an AMQP short string (e.g. bytes that are not UTF-8, which grow
/// when decoded) counts as absent, so the `message_id` is used, as for a command without one.
public struct ReplyEnvelope: Sendable {
    /// To the events exchange; its confirm gates the command's ack.
    public var events: OutgoingMessage
    /// To the allowed `reply_to`, best effort.
    public var replyToCopy: OutgoingMessage?
    /// A `reply_to` that `ReplyToPolicy` refused (logged and counted by the worker).
    public var refusedReplyTo: String?
    /// True when the command's `correlation_id` could not be carried.
    public var droppedCorrelationID: Bool

    public var messages: [OutgoingMessage] { replyToCopy.map { [events, $0] } ?? [events] }

    public static func routingKey(for type: ReplyType) -> String {
        type == .customerCreated ? "customer.created" : "customer.create_failed"
    }

    /// `traceHeaders`: the W3C trace context of the command's span (`traceparent`, `tracestate`),
    /// when traced; a replayed reply gets the current trace's, its body staying the stored bytes.
    public init(command: borrowing MessageProperties, reply: ReplyRecord, configuration: WorkerConfiguration, timestamp: UInt64,
                traceHeaders: [String: FieldValue] = [:]) {
        // Sized for every header at once: grown one insert at a time, the table was rehashed.
        var headers = [String: FieldValue](minimumCapacity: traceHeaders.count + 2)
        headers.merge(traceHeaders) { _, trace in trace }
        headers["x-replayed"] = .bool(reply.replayed)
        if let key = reply.idempotencyKey { headers["x-idempotency-key"] = .string(key) }
        let correlationID = MessageProperties.shortString(command.correlationID)
        droppedCorrelationID = command.correlationID != nil && correlationID == nil
        let properties = MessageProperties(
            contentType: "application/json", headers: headers, persistent: true,
            correlationID: correlationID ?? MessageProperties.shortString(command.messageID), messageID: reply.messageID,
            timestamp: timestamp, type: reply.type.rawValue, appID: configuration.appID)
        events = OutgoingMessage(exchange: configuration.names.eventsExchange, routingKey: Self.routingKey(for: reply.type),
                                 body: reply.body, properties: properties)
        switch configuration.replyTo.decide(command.replyTo) {
        case .allowed(let replyTo):
            replyToCopy = OutgoingMessage(exchange: "", routingKey: replyTo, body: reply.body, properties: properties)
            refusedReplyTo = nil
        case .refused(let name):
            replyToCopy = nil
            refusedReplyTo = name
        case .none:
            replyToCopy = nil
            refusedReplyTo = nil
        }
    }
}
