import AMQP
import Tracing

/// The spans of the worker, named and attributed as the OpenTelemetry messaging conventions for
/// RabbitMQ say: a `process` span per command (CONSUMER, child of the sender's context from the
/// command's `traceparent`), and per batch one span for its database transaction and one for
/// publishing its replies and awaiting their confirms, each linked to every command's span.
///
/// The worker makes one only while tracing is on (`TracingBackend.isEnabled`); with tracing off
/// it holds none, so a command costs no header lookup, span or lock.
public struct CommandSpans: Sendable {
    /// The command queue (`messaging.destination.subscription.name` of a delivery whose queue
    /// the session no longer knows; otherwise the delivery's own queue, e.g. a shard).
    public let queue: String
    /// The exchange replies go to.
    public let eventsExchange: String
    /// `sqlite` or `postgresql` (`db.system.name`).
    public let databaseSystem: String

    public init(queue: String, eventsExchange: String, databaseSystem: String) {
        self.queue = queue
        self.eventsExchange = eventsExchange
        self.databaseSystem = databaseSystem
    }

    /// The sender's context, from the command's headers; top level when it sent none (or a
    /// malformed one).
    public static func senderContext(of delivery: Delivery) -> ServiceContext {
        // Only the trace headers: swift-otel logs the whole carrier when it cannot parse them, and
        // a command's headers carry its API key.
        var carrier: [String: FieldValue] = [:]
        for key in traceHeaders { carrier[key] = delivery.properties.headers[key] }
        var context = ServiceContext.topLevel
        InstrumentationSystem.instrument.extract(carrier, into: &context, using: AMQPHeadersExtractor())
        return context
    }

    /// The headers W3C Trace Context travels in.
    public static let traceHeaders = ["traceparent", "tracestate"]

    /// Starts the `process` span of one delivery.
    public func process(_ delivery: Delivery) -> any Span {
        // "{operation} {destination}": the destination of a RabbitMQ message is its exchange.
        let exchange = delivery.exchange
        let span = startSpan("process \(exchange.isEmpty ? "(default)" : exchange)", context: Self.senderContext(of: delivery), ofKind: .consumer)
        span.updateAttributes { attributes in
            attributes["messaging.system"] = "rabbitmq"
            attributes["messaging.operation.type"] = "process"
            attributes["messaging.operation.name"] = "process"
            attributes["messaging.destination.name"] = exchange
            // The queue it came from: a shard of fair share, or the command queue.
            attributes["messaging.destination.subscription.name"] = delivery.queue ?? queue
            attributes["messaging.rabbitmq.destination.routing_key"] = delivery.routingKey
            attributes["messaging.rabbitmq.message.delivery_tag"] = Int64(truncatingIfNeeded: delivery.tag.value)
            attributes["messaging.message.body.size"] = delivery.body.count
            if let id = delivery.properties.messageID { attributes["messaging.message.id"] = id }
            if let id = delivery.properties.correlationID { attributes["messaging.message.conversation_id"] = id }
            attributes["customer_worker.redelivered"] = delivery.redelivered
        }
        return span
    }

    /// Starts the span of one database transaction over `commands` (their `process` spans).
    public func transaction(_ commands: [any Span]) -> any Span {
        let span = startSpan("customers.create transaction", context: .topLevel, ofKind: .client)
        span.updateAttributes { attributes in
            attributes["db.system.name"] = databaseSystem
            attributes["db.operation.name"] = "customers.create"
            attributes["db.operation.batch.size"] = commands.count
        }
        link(span, to: commands)
        return span
    }

    /// Starts the span of publishing the replies to `commands` and awaiting their confirms.
    public func publish(_ commands: [any Span]) -> any Span {
        let span = startSpan("send \(eventsExchange)", context: .topLevel, ofKind: .producer)
        span.updateAttributes { attributes in
            attributes["messaging.system"] = "rabbitmq"
            attributes["messaging.operation.type"] = "send"
            attributes["messaging.operation.name"] = "publish"
            attributes["messaging.destination.name"] = eventsExchange
            attributes["messaging.batch.message_count"] = commands.count
        }
        link(span, to: commands)
        return span
    }

    /// The headers that carry `span`'s context into a reply (`traceparent`, `tracestate`), so the
    /// sender's trace continues with it.
    public static func headers(for span: any Span) -> [String: FieldValue] {
        var headers: [String: FieldValue] = [:]
        InstrumentationSystem.instrument.inject(span.context, into: &headers, using: AMQPHeadersInjector())
        return headers
    }

    private func link(_ span: any Span, to commands: [any Span]) {
        for command in commands { span.addLink(SpanLink(context: command.context, attributes: [:])) }
    }
}
