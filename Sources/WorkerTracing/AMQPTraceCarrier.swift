import AMQP
import Tracing

/// Reads W3C trace context (`traceparent`, `tracestate`) from a message's AMQP application headers.
/// A long string may arrive as bytes (some clients send every header value that way).
public struct AMQPHeadersExtractor: Extractor {
    public init() {}

    public func extract(key: String, from carrier: [String: FieldValue]) -> String? {
        switch carrier[key] {
        case .string(let value): value
        case .bytes(let bytes): String(validating: bytes, as: UTF8.self)
        default: nil
        }
    }
}

/// Writes W3C trace context into a message's AMQP application headers, as short strings.
public struct AMQPHeadersInjector: Injector {
    public init() {}

    public func inject(_ value: String, forKey key: String, into carrier: inout [String: FieldValue]) {
        carrier[key] = .string(value)
    }
}
