import CRabbitMQ
import Foundation

/// Where and how to connect. Built from an AMQP URI:
/// `amqp[s]://user:pass@host:port/vhost?heartbeat=30&connection_timeout=10000&cacertfile=…`
/// (query keys as in RabbitMQ's URI spec: `heartbeat` seconds, `connection_timeout` ms,
/// `cacertfile`, `certfile`, `keyfile`, `verify=verify_peer|verify_none`).
public struct ConnectionConfiguration: Sendable, Hashable {
    public var host: String
    public var port: Int
    public var user: String
    public var password: String
    public var vhost: String
    /// nil → plain TCP.
    public var tls: TLSConfiguration?
    /// 0 disables heartbeats.
    public var heartbeat: Duration = .seconds(30)
    public var connectTimeout: Duration = .seconds(10)
    /// Upper bound for each synchronous broker call (login, declare, close), so none hangs.
    public var rpcTimeout: Duration = .seconds(30)
    /// Shown as the connection name in the broker's management UI and `rabbitmqctl`.
    public var connectionName: String?

    public var endpoint: String { "\(host):\(port)" }

    public init(host: String = "127.0.0.1", port: Int = 5672, user: String = "guest", password: String = "guest",
                vhost: String = "/", tls: TLSConfiguration? = nil) {
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.vhost = vhost
        self.tls = tls
    }

    public init(url: String) throws(AMQPError) {
        let (base, query) = Self.splitQuery(url)
        guard base.hasPrefix("amqp://") || base.hasPrefix("amqps://") else {
            throw .invalidURL(url: url, reason: "the scheme must be amqp:// or amqps://")
        }
        // rabbitmq-c parses in place and points into the buffer: copy the fields out before freeing it.
        guard let buffer = strdup(base) else { throw .invalidURL(url: url, reason: "out of memory") }
        defer { free(buffer) }
        var info = amqp_connection_info()
        amqp_default_connection_info(&info)
        let status = amqp_parse_url(buffer, &info)
        guard status == AMQP_STATUS_OK.rawValue else {
            throw .invalidURL(url: url, reason: "expected amqp[s]://user:password@host:port/vhost")
        }
        guard let hostPointer = info.host, hostPointer.pointee != 0 else { throw .invalidURL(url: url, reason: "the host is missing") }
        self.init(
            host: String(cString: hostPointer),
            port: Int(info.port),
            user: String(cString: info.user),
            password: String(cString: info.password),
            vhost: String(cString: info.vhost),
            tls: info.ssl != 0 ? TLSConfiguration() : nil
        )
        try apply(query: query, url: url)
    }

    private static func splitQuery(_ url: String) -> (String, [URLQueryItem]) {
        guard let mark = url.firstIndex(of: "?") else { return (url, []) }
        var components = URLComponents()
        components.percentEncodedQuery = String(url[url.index(after: mark)...])
        return (String(url[..<mark]), components.queryItems ?? [])
    }

    private mutating func apply(query: [URLQueryItem], url: String) throws(AMQPError) {
        for item in query {
            let value = item.value ?? ""
            switch item.name {
            case "heartbeat":
                guard let seconds = Int(value), (0...3600).contains(seconds) else {
                    throw .invalidURL(url: url, reason: "heartbeat must be 0...3600 seconds, got '\(value)'")
                }
                heartbeat = .seconds(seconds)
            case "connection_timeout":
                guard let milliseconds = Int(value), milliseconds > 0 else {
                    throw .invalidURL(url: url, reason: "connection_timeout must be a positive number of milliseconds, got '\(value)'")
                }
                connectTimeout = .milliseconds(milliseconds)
            case "cacertfile", "certfile", "keyfile", "verify":
                guard tls != nil else { throw .invalidURL(url: url, reason: "\(item.name) needs an amqps:// URL") }
                try tls!.apply(name: item.name, value: value, url: url)
            default:
                throw .invalidURL(url: url, reason: "unknown query parameter '\(item.name)'")
            }
        }
    }
}

/// TLS settings: TLS 1.2 or newer, peer and hostname verification on unless turned off.
public struct TLSConfiguration: Sendable, Hashable {
    /// CA bundle to verify the broker with; nil → the system bundle.
    public var caFile: String?
    public var certificateFile: String?
    public var keyFile: String?
    public var verifyPeer = true
    public var verifyHostname = true

    public init(caFile: String? = nil, certificateFile: String? = nil, keyFile: String? = nil) {
        self.caFile = caFile
        self.certificateFile = certificateFile
        self.keyFile = keyFile
    }

    /// Debian's and most distributions' system bundle.
    static let systemCABundle = "/etc/ssl/certs/ca-certificates.crt"

    mutating func apply(name: String, value: String, url: String) throws(AMQPError) {
        switch name {
        case "cacertfile": caFile = value
        case "certfile": certificateFile = value
        case "keyfile": keyFile = value
        default:
            switch value {
            case "verify_peer": (verifyPeer, verifyHostname) = (true, true)
            case "verify_none": (verifyPeer, verifyHostname) = (false, false)
            default: throw .invalidURL(url: url, reason: "verify must be verify_peer or verify_none, got '\(value)'")
            }
        }
    }
}

/// How to reconnect after the connection is lost: exponential backoff with full jitter.
public struct RecoveryPolicy: Sendable, Hashable {
    public var initialDelay: Duration = .milliseconds(100)
    public var maximumDelay: Duration = .seconds(10)
    public var multiplier: Double = 2
    /// Rounds of reconnecting (every node once per round); nil → keep trying until the session
    /// is closed.
    public var maximumAttempts: Int?
    /// Attempts at a publish that the broker keeps refusing with a channel error (404, 403).
    public var channelErrorAttempts: Int = RecoveryPolicy.defaultChannelErrorAttempts

    public init(initialDelay: Duration = .milliseconds(100), maximumDelay: Duration = .seconds(10),
                multiplier: Double = 2, maximumAttempts: Int? = nil,
                channelErrorAttempts: Int = RecoveryPolicy.defaultChannelErrorAttempts) {
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
        self.multiplier = multiplier
        self.maximumAttempts = maximumAttempts
        self.channelErrorAttempts = channelErrorAttempts
    }

    /// The delay before attempt `attempt` (1-based): a random point between half and all of the
    /// capped exponential delay, so replicas that lost the broker together do not return together.
    public func delay(beforeAttempt attempt: Int) -> Duration {
        // In seconds as a Double: the exponential overflows Duration long before attempts run out.
        let seconds = { (duration: Duration) in Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18 }
        let exponential = seconds(initialDelay) * pow(multiplier, Double(max(0, attempt - 1)))
        let capped = min(exponential, seconds(maximumDelay))
        return .seconds(capped * Double.random(in: 0.5...1.0))
    }
}

extension ConnectionConfiguration: CustomStringConvertible, CustomDebugStringConvertible {
    /// The URL without its password (`amqp://user:***@host:port/vhost`): what logs and errors show.
    public var redacted: String {
        let vhost = vhost.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? vhost
        return "\(tls == nil ? "amqp" : "amqps")://\(user):***@\(host):\(port)/\(vhost)"
    }

    public var description: String { redacted }
    public var debugDescription: String { redacted }

    /// A comma-separated list of URLs, one per broker node (each with its own credentials and
    /// query options), as `AMQP_URL` accepts it for a cluster.
    public static func list(_ urls: String) throws(AMQPError) -> [ConnectionConfiguration] {
        let parts = urls.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard !parts.isEmpty else { throw .invalidURL(url: urls, reason: "no URL given") }
        var nodes: [ConnectionConfiguration] = []
        for part in parts { nodes.append(try ConnectionConfiguration(url: part)) }
        return nodes
    }
}

extension RecoveryPolicy {
    /// The default number of times a publish the broker refuses with a channel error (404 no
    /// such exchange, 403 access refused) is tried again on a fresh channel, after the session
    /// re-declared its topology, before it fails.
    public static let defaultChannelErrorAttempts = 3
}
