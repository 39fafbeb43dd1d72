import Logging

/// Removes passwords from text that may contain URLs: `scheme://user:secret@host` becomes
/// `scheme://user:***@host`, wherever it occurs (a whole URL, or one embedded in an error
/// message), for AMQP and database URLs alike. Text without `://` is returned unchanged.
public enum Redaction {
    public static let mask = "***"

    public static func redactingCredentials(in text: String) -> String {
        guard text.contains("://") else { return text }
        var output = Substring()
        var rest = Substring(text)
        while let scheme = rest.range(of: "://") {
            output += rest[..<scheme.upperBound]
            rest = rest[scheme.upperBound...]
            // The URL ends at a character it cannot hold unescaped (space, quote, angle bracket)
            // when it is embedded in prose. The password runs from the first colon to the last
            // `@` (a password may hold `/` or `@` that were not escaped); a colon after `@` or in
            // a path is not a password, and at worst a port and path get masked too.
            let end = rest.firstIndex { "\"' \t\n<>".contains($0) } ?? rest.endIndex
            let token = rest[..<end]
            if let at = token.lastIndex(of: "@"), let colon = token[..<at].firstIndex(of: ":") {
                output += token[...colon] + mask + token[at...]
            } else {
                output += token
            }
            rest = rest[end...]
        }
        return String(output + rest)
    }
}

/// Wraps a log handler so no URL password reaches a log line: the message, every metadata value
/// and the error are redacted before the wrapped handler sees them.
public struct RedactingLogHandler<Wrapped: LogHandler>: LogHandler {
    public var wrapped: Wrapped

    public init(_ wrapped: Wrapped) { self.wrapped = wrapped }

    public var logLevel: Logger.Level {
        get { wrapped.logLevel }
        set { wrapped.logLevel = newValue }
    }

    public var metadata: Logger.Metadata {
        get { wrapped.metadata }
        set { wrapped.metadata = newValue }
    }

    public var metadataProvider: Logger.MetadataProvider? {
        get { wrapped.metadataProvider }
        set { wrapped.metadataProvider = newValue }
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { wrapped[metadataKey: key] }
        set { wrapped[metadataKey: key] = newValue }
    }

    public func log(event: LogEvent) {
        var event = event
        event.message = "\(Redaction.redactingCredentials(in: event.message.description))"
        event.metadata = event.metadata.map(Self.redact)
        if let error = event.error { event.error = RedactedError(error) }
        // Metadata set on the handler or by a provider is redacted too.
        var copy = wrapped
        copy.metadata = Self.redact(copy.metadata)
        if let provider = copy.metadataProvider {
            copy.metadataProvider = Logger.MetadataProvider { Self.redact(provider.get()) }
        }
        copy.log(event: event)
    }

    static func redact(_ metadata: Logger.Metadata) -> Logger.Metadata {
        metadata.mapValues(redact)
    }

    static func redact(_ value: Logger.Metadata.Value) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(Redaction.redactingCredentials(in: text))
        case .stringConvertible(let convertible): .string(Redaction.redactingCredentials(in: convertible.description))
        case .dictionary(let dictionary): .dictionary(redact(dictionary))
        case .array(let array): .array(array.map(redact))
        }
    }
}

/// An error shown by its redacted description.
struct RedactedError: Error, CustomStringConvertible {
    let description: String

    init(_ error: any Error) { description = Redaction.redactingCredentials(in: String(describing: error)) }
}
