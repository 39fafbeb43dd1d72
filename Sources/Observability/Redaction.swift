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
/// and the error are redacted before the wrapped handler sees them. For a line-oriented format
/// (text), control characters are escaped as well, so a value from a message (a `message_id`
/// with a newline) cannot start a forged line.
public struct RedactingLogHandler<Wrapped: LogHandler>: LogHandler {
    public var wrapped: Wrapped
    public let escapesControlCharacters: Bool

    public init(_ wrapped: Wrapped, escapingControlCharacters: Bool = false) {
        self.wrapped = wrapped
        escapesControlCharacters = escapingControlCharacters
    }

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
        let escapes = escapesControlCharacters
        event.message = "\(Self.clean(event.message.description, escapes))"
        event.metadata = event.metadata.map { Self.redact($0, escapes) }
        if let error = event.error { event.error = RedactedError(Self.clean(String(describing: error), escapes)) }
        // Metadata set on the handler or by a provider is redacted too.
        var copy = wrapped
        copy.metadata = Self.redact(copy.metadata, escapes)
        if let provider = copy.metadataProvider {
            copy.metadataProvider = Logger.MetadataProvider { Self.redact(provider.get(), escapes) }
        }
        copy.log(event: event)
    }

    static func clean(_ text: String, _ escapes: Bool) -> String {
        let redacted = Redaction.redactingCredentials(in: text)
        return escapes ? Redaction.escapingControlCharacters(in: redacted) : redacted
    }

    static func redact(_ metadata: Logger.Metadata, _ escapes: Bool) -> Logger.Metadata {
        metadata.mapValues { redact($0, escapes) }
    }

    static func redact(_ value: Logger.Metadata.Value, _ escapes: Bool) -> Logger.Metadata.Value {
        switch value {
        case .string(let text): .string(clean(text, escapes))
        case .stringConvertible(let convertible): .string(clean(convertible.description, escapes))
        case .dictionary(let dictionary): .dictionary(redact(dictionary, escapes))
        case .array(let array): .array(array.map { redact($0, escapes) })
        }
    }
}

/// An error shown by its redacted description.
struct RedactedError: Error, CustomStringConvertible {
    let description: String

    init(_ description: String) { self.description = description }
}

extension Redaction {
    /// `text` with every control character (C0, DEL, C1) and the line and paragraph separators
    /// (U+2028, U+2029) written as an escape: `\n`, `\r`, `\t`, or `\u{XX}`. Text without them, the
    /// usual case, is returned as it is after one pass over its bytes.
    public static func escapingControlCharacters(in text: String) -> String {
        guard needsEscaping(text) else { return text }
        var escaped = ""
        escaped.reserveCapacity(text.utf8.count + 8)
        for scalar in text.unicodeScalars {
            switch scalar.value {
            case 0x0A: escaped += "\\n"
            case 0x0D: escaped += "\\r"
            case 0x09: escaped += "\\t"
            case 0x00..<0x20, 0x7F...0x9F, 0x2028, 0x2029: escaped += "\\u{\(String(scalar.value, radix: 16))}"
            default: escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }

    private static func needsEscaping(_ text: String) -> Bool {
        var previous: UInt8 = 0, beforePrevious: UInt8 = 0
        for byte in text.utf8 {
            if byte < 0x20 || byte == 0x7F { return true }
            if previous == 0xC2, byte <= 0x9F, byte >= 0x80 { return true }  // U+0080…U+009F
            if beforePrevious == 0xE2, previous == 0x80, byte == 0xA8 || byte == 0xA9 { return true }  // U+2028, U+2029
            beforePrevious = previous
            previous = byte
        }
        return false
    }
}
