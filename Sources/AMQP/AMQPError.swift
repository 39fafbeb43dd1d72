/// Everything that can go wrong talking to the broker, with the context a user needs to act.
public enum AMQPError: Error, Sendable, Equatable, CustomStringConvertible {
    /// The URL could not be understood.
    case invalidURL(url: String, reason: String)
    /// No TCP connection: refused, unreachable, or name resolution failed.
    case connectionFailed(endpoint: String, reason: String)
    /// The TLS handshake or TLS setup failed (certificate, CA file, hostname, protocol).
    case tlsFailed(endpoint: String, reason: String)
    /// The broker refused the user name or password (`ACCESS_REFUSED` during login).
    case authenticationFailed(user: String, endpoint: String, detail: String)
    /// The virtual host does not exist or the user may not use it.
    case vhostNotAccessible(vhost: String, detail: String)
    /// An operation did not complete in time.
    case timeout(operation: String)
    /// The broker closed the connection (`connection.close`).
    case connectionClosedByBroker(code: UInt16, text: String)
    /// The broker closed the channel (`channel.close`), e.g. `PRECONDITION_FAILED` on a declare.
    case channelClosedByBroker(operation: String, code: UInt16, text: String)
    /// The broker cancelled our consumer (`basic.cancel`): queue deleted or leader moved.
    case consumerCancelledByBroker(consumerTag: String)
    /// The socket broke or the library reported an error.
    case connectionLost(operation: String, reason: String)
    /// The session was closed by its owner.
    case sessionClosed
    /// The task waiting for the operation was cancelled (the operation itself may still complete).
    case cancelled(operation: String)
    /// The client cannot encode this message (e.g. a property longer than the 255 bytes of an
    /// AMQP short string): nothing of it was sent, and the connection is unharmed.
    case unencodable(operation: String, reason: String)

    public var description: String {
        switch self {
        case .invalidURL(let url, let reason):
            "invalid AMQP URL \(Self.redacted(url)): \(reason)"
        case .connectionFailed(let endpoint, let reason):
            "cannot connect to \(endpoint): \(reason)"
        case .tlsFailed(let endpoint, let reason):
            "TLS with \(endpoint) failed: \(reason)"
        case .authenticationFailed(let user, let endpoint, let detail):
            "broker \(endpoint) refused the credentials of user '\(user)': \(detail)"
        case .vhostNotAccessible(let vhost, let detail):
            "virtual host '\(vhost)' is not accessible: \(detail)"
        case .timeout(let operation):
            "timed out: \(operation)"
        case .connectionClosedByBroker(let code, let text):
            "broker closed the connection: \(code) \(text)"
        case .channelClosedByBroker(let operation, let code, let text):
            "broker closed the channel during \(operation): \(code) \(text)"
        case .consumerCancelledByBroker(let consumerTag):
            "broker cancelled consumer \(consumerTag)"
        case .connectionLost(let operation, let reason):
            "connection lost during \(operation): \(reason)"
        case .sessionClosed:
            "the AMQP session is closed"
        case .cancelled(let operation):
            "cancelled while \(operation)"
        case .unencodable(let operation, let reason):
            "cannot encode \(operation): \(reason)"
        }
    }

    /// Whether reconnecting may help. Configuration mistakes (a bad URL) never get better.
    public var isRecoverable: Bool {
        switch self {
        case .invalidURL, .sessionClosed, .cancelled, .unencodable: false
        default: true
        }
    }

    /// Whether the connection died under an operation without the broker refusing anything: it
    /// did not answer in time, or the socket broke.
    public var isCutOff: Bool {
        switch self {
        case .timeout, .connectionLost: true
        default: false
        }
    }

    /// Whether the broker refused a declaration only for now, having removed what it started: a
    /// quorum queue's Raft group elected no leader within the broker's timeout (`541 INTERNAL_ERROR
    /// … cluster_not_formed`, seen on a node too loaded to elect in 5 s), or RabbitMQ 4's metadata
    /// store did not answer in time. Declaring again succeeds once the node catches up; every other
    /// refusal (arguments that differ, a missing plugin, access) would fail the same way again.
    public var isTransientDeclarationFailure: Bool {
        switch self {
        case .connectionClosedByBroker(let code, let text), .channelClosedByBroker(_, let code, let text):
            code == 541 && (text.contains("cluster_not_formed") || text.contains("metadata store operation timed out"))
        default:
            false
        }
    }

    /// `amqp://user:secret@host` → `amqp://user:***@host`, so URLs can be logged and shown.
    /// A comma-separated list of URLs is redacted URL by URL.
    public static func redacted(_ url: String) -> String {
        guard !url.contains(",") else { return url.split(separator: ",", omittingEmptySubsequences: false).map { redactedOne(String($0)) }.joined(separator: ",") }
        return redactedOne(url)
    }

    private static func redactedOne(_ url: String) -> String {
        guard let scheme = url.range(of: "://"), let at = url[scheme.upperBound...].lastIndex(of: "@") else { return url }
        let userInfo = url[scheme.upperBound..<at]
        guard let colon = userInfo.firstIndex(of: ":") else { return url }
        return url[..<colon] + ":***" + url[at...]
    }
}
