import AMQP

/// Which `reply_to` names the worker publishes a copy of a reply to. Without it any sender could
/// make the worker publish, with the worker's permissions, into any queue of the virtual host.
///
/// Never allowed: the worker's own queues (`ownQueues`: the command, dead-letter and replies
/// queues, every queue its topology declares), whatever the pattern says, so a sender cannot
/// feed the worker its own replies or fill its dead-letter queue.
/// Allowed by default: RabbitMQ's direct reply-to (`amq.rabbitmq.reply-to.<token>`, as a consumer
/// of the pseudo-queue sees it) and server-named queues (`amq.gen-…`, unless
/// `allowsServerNamed` is off: a name of 22 random characters the sender can only know if it
/// declared the queue, or was told). Other names only when they match `pattern` as a whole (a
/// regular expression, `REPLY_TO_PATTERN`).
public struct ReplyToPolicy: Sendable {
    public static let directReplyToPrefix = "amq.rabbitmq.reply-to."
    public static let serverNamedPrefix = "amq.gen-"

    public let pattern: String?
    /// `REPLY_TO_SERVER_NAMED`: whether `amq.gen-…` names are allowed without the pattern.
    public var allowsServerNamed = true
    /// The worker's own queues; `WorkerConfiguration` keeps it equal to its topology's queues.
    public var ownQueues: Set<String> = []

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
        if hasPrefix(name, Self.directReplyToPrefix) { return true }
        if allowsServerNamed, hasPrefix(name, Self.serverNamedPrefix) { return true }
        // Compiled per use: `Regex` is not Sendable, and only names outside the built-in
        // prefixes (a configured pattern, rarely used) get here. RabbitMQ refuses to declare
        // names starting with `amq.`, so an own queue can only be reached through the pattern.
        guard let pattern, !ownQueues.contains(name), let regex = try? Regex(pattern) else { return false }
        return (try? regex.wholeMatch(in: name)) != nil
    }

    private func hasPrefix(_ name: String, _ prefix: String) -> Bool {
        name.hasPrefix(prefix) && name.count > prefix.count
    }
}
