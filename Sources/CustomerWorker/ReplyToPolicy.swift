import AMQP

/// Which `reply_to` names the worker publishes a copy of a reply to. Without it any sender could
/// make the worker publish, with the worker's permissions, into any queue of the virtual host.
///
/// Always allowed: RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to.<token>`, as a consumer of
/// the pseudo-queue sees it) and server-named queues (`amq.gen-…`). Other names only when they
/// match `pattern` as a whole (a regular expression, `REPLY_TO_PATTERN`).
public struct ReplyToPolicy: Sendable {
    public static let allowedPrefixes = ["amq.rabbitmq.reply-to.", "amq.gen-"]

    public let pattern: String?

    /// Only the built-in prefixes.
    public init() {
        pattern = nil
    }

    /// The built-in prefixes and names matching `pattern`; throws when it is not a valid
    /// regular expression.
    public init(pattern: String) throws {
        _ = try Regex(pattern)
        self.pattern = pattern
    }

    /// What to do with a command's `reply_to`.
    public enum Decision: Sendable, Equatable {
        case none
        case allowed(String)
        case refused(String)
    }

    public func decide(_ replyTo: String?) -> Decision {
        guard let replyTo, !replyTo.isEmpty else { return .none }
        return allows(replyTo) ? .allowed(replyTo) : .refused(replyTo)
    }

    public func allows(_ name: String) -> Bool {
        // A routing key is a short string: at most 255 bytes.
        guard name.utf8.count <= 255 else { return false }
        if Self.allowedPrefixes.contains(where: { name.hasPrefix($0) && name.count > $0.count }) { return true }
        // Compiled per use: `Regex` is not Sendable, and only names outside the built-in
        // prefixes (a configured pattern, rarely used) get here.
        guard let pattern, let regex = try? Regex(pattern) else { return false }
        return (try? regex.wholeMatch(in: name)) != nil
    }
}
