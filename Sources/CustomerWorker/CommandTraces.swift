import AMQP
import Synchronization
import Tracing
import WorkerTracing

/// The `process` span of every delivery the worker holds, from receipt until it is settled:
/// acknowledged after its reply was confirmed, dead-lettered, returned to the queue, or left to its
/// redelivery. Exists only while tracing is on (`CommandWorker` holds nil otherwise).
final class CommandTraces: Sendable {
    let spans: CommandSpans
    private let open = Mutex<[DeliveryTag: any Span]>([:])

    init(_ spans: CommandSpans) { self.spans = spans }

    /// How a delivery left the worker, as its span records it.
    enum Settlement: Sendable {
        case acknowledged(ReplyRecordSummary)
        case deadLettered(reason: String)
        case returned
        case leftToRedelivery
    }

    /// What a span says about the reply.
    struct ReplyRecordSummary: Sendable {
        let type: String
        let errorCode: String?
        let replayed: Bool
    }

    func received(_ deliveries: [Delivery]) {
        let started = deliveries.map { ($0.tag, spans.process($0)) }
        open.withLock { open in for (tag, span) in started { open[tag] = span } }
    }

    func span(_ tag: DeliveryTag) -> (any Span)? { open.withLock { $0[tag] } }

    /// The context of a delivery's span, to bind while logging about it (its lines then carry
    /// `trace_id` and `span_id`).
    func context(_ tag: DeliveryTag) -> ServiceContext? { span(tag)?.context }

    /// `traceparent` (and `tracestate`) for the reply to a delivery: its span's context.
    func replyHeaders(_ tag: DeliveryTag) -> [String: FieldValue] {
        span(tag).map(CommandSpans.headers(for:)) ?? [:]
    }

    func transactionSpan(_ tags: [DeliveryTag]) -> any Span { spans.transaction(tags.compactMap(span)) }
    func publishSpan(_ tags: [DeliveryTag]) -> any Span { spans.publish(tags.compactMap(span)) }

    func settle(_ tags: [DeliveryTag], _ settlement: Settlement) {
        let ended = open.withLock { open in tags.compactMap { open.removeValue(forKey: $0) } }
        for span in ended {
            switch settlement {
            case .acknowledged(let reply):
                span.updateAttributes { attributes in
                    attributes["customer_worker.reply.type"] = reply.type
                    attributes["customer_worker.reply.replayed"] = reply.replayed
                    if let code = reply.errorCode { attributes["customer_worker.reply.error_code"] = code }
                }
            case .deadLettered(let reason):
                span.attributes["customer_worker.dead_letter.reason"] = reason
                span.setStatus(SpanStatus(code: .error, message: "dead-lettered: \(reason)"))
            case .returned:
                span.setStatus(SpanStatus(code: .error, message: "returned to the queue"))
            case .leftToRedelivery:
                span.attributes["customer_worker.left_to_redelivery"] = true
            }
            span.end()
        }
    }
}
