import Foundation

/// A `postgres://user:password@host:port/database?sslmode=…` URL, parsed. The password never
/// appears in `redacted`, in errors or in logs.
///
/// Query options: `sslmode` and `sslrootcert` as libpq reads them (below), `pool_size` (connections
/// per process, default 4), `connect_timeout` (seconds, default 10), `answer_timeout` (seconds a
/// transaction may wait for the server before its connection is closed, default 60; see
/// `PostgresStore.transaction`).
///
/// `sslmode`, as libpq documents it:
/// - `disable`: no TLS.
/// - `prefer` (the default): TLS when the server offers it, else plain text: no protection against
///   an active attacker. With `sslrootcert`, the certificate chain is verified when TLS is used.
/// - `require`: TLS or no connection; the certificate is not checked, unless `sslrootcert` names a
///   CA file: then the chain is verified, exactly as `verify-ca` does.
/// - `verify-ca`: TLS, and the server's certificate must chain to the trusted CA.
/// - `verify-full`: as `verify-ca`, and the certificate must name the host of the URL (a DNS name,
///   or an IP address when the URL gives one).
/// `sslrootcert` is a PEM file of the CA(s) to trust, or `system` for the system's roots (as libpq
/// 16, only with `verify-full`). Without it, `verify-ca` and `verify-full` trust the system's roots
/// (libpq would read `~/.postgresql/root.crt`). A named file that cannot be read is refused here.
public struct PostgresURL: Sendable, Hashable {
    public enum SSLMode: String, Sendable, CaseIterable {
        case disable, prefer, require, verifyCA = "verify-ca", verifyFull = "verify-full"
    }

    public var host: String
    public var port: Int
    public var username: String
    public var password: String?
    public var database: String
    public var sslMode: SSLMode
    public var sslRootCertificate: String?
    public var poolSize: Int
    public var connectTimeout: Duration
    /// How long a transaction may go unanswered: a connection whose server has gone (terminated,
    /// partitioned) without the socket saying so is closed then, and the database counts as away.
    public var answerTimeout: Duration

    /// Whether `text` names a PostgreSQL database (`postgres://` or `postgresql://`).
    public static func matches(_ text: String) -> Bool {
        text.hasPrefix("postgres://") || text.hasPrefix("postgresql://")
    }

    public init(_ text: String) throws(Invalid) {
        let invalid = { (rule: String) in Invalid(url: Self.redact(text), rule: rule) }
        guard Self.matches(text), let components = URLComponents(string: text) else {
            throw invalid("must look like postgres://user:password@host:port/database")
        }
        guard let host = components.host, !host.isEmpty else { throw invalid("names no host") }
        self.host = host
        port = components.port ?? 5432
        guard (1...65_535).contains(port) else { throw invalid("the port must be 1...65535") }
        guard let user = components.user, !user.isEmpty else { throw invalid("names no user") }
        username = user.removingPercentEncoding ?? user
        password = components.password.map { $0.removingPercentEncoding ?? $0 }
        let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
        database = path.isEmpty ? username : (path.removingPercentEncoding ?? path)
        sslMode = .prefer
        poolSize = 4
        connectTimeout = .seconds(10)
        answerTimeout = .seconds(60)
        for item in components.queryItems ?? [] {
            let value = item.value ?? ""
            switch item.name {
            case "sslmode":
                guard let mode = SSLMode(rawValue: value) else {
                    throw invalid("sslmode must be one of " + SSLMode.allCases.map(\.rawValue).joined(separator: ", "))
                }
                sslMode = mode
            case "sslrootcert":
                guard !value.isEmpty else { throw invalid("sslrootcert must name a PEM file or be system") }
                sslRootCertificate = value
            case "pool_size":
                guard let size = Int(value), (1...100).contains(size) else { throw invalid("pool_size must be 1...100") }
                poolSize = size
            case "connect_timeout":
                guard let seconds = Int(value), (1...600).contains(seconds) else { throw invalid("connect_timeout must be 1...600 seconds") }
                connectTimeout = .seconds(seconds)
            case "answer_timeout":
                guard let seconds = Int(value), (1...86_400).contains(seconds) else { throw invalid("answer_timeout must be 1...86400 seconds") }
                answerTimeout = .seconds(seconds)
            default:
                throw invalid("unknown option \(item.name) (sslmode, sslrootcert, pool_size, connect_timeout, answer_timeout)")
            }
        }
        if sslRootCertificate == "system", sslMode != .verifyFull {
            throw invalid("sslrootcert=system needs sslmode=verify-full (as libpq: the system's roots vouch for a host name only)")
        }
        if let file = sslRootCertificate, file != "system", !FileManager.default.isReadableFile(atPath: file) {
            throw invalid("sslrootcert \(file) is not a readable file")
        }
    }

    /// A URL that breaks a rule: which one, and the URL without its password.
    public struct Invalid: Error, Sendable, Equatable, CustomStringConvertible {
        public let url: String
        public let rule: String
        public var description: String { "invalid PostgreSQL URL \(url): \(rule)" }
    }

    /// How the server's certificate is checked, or nil without TLS.
    public var certificateCheck: CertificateCheck? {
        switch sslMode {
        case .disable: nil
        // libpq verifies the chain whenever a root certificate file is given.
        case .prefer, .require: sslRootCertificate == nil ? CertificateCheck.none : .chain
        case .verifyCA: .chain
        case .verifyFull: .chainAndHostName
        }
    }

    public enum CertificateCheck: Sendable, Equatable {
        case none, chain, chainAndHostName
    }

    /// The URL with its password replaced by `***`.
    public var redacted: String { Self.redact(description) }

    private var description: String {
        "postgres://\(username)@\(host):\(port)/\(database)?sslmode=\(sslMode.rawValue)"
    }

    /// `scheme://user:***@rest`: whatever stands between the first `:` after the scheme and the last
    /// `@` before the path is a password.
    public static func redact(_ text: String) -> String {
        guard let schemeEnd = text.range(of: "://") else { return text }
        let rest = text[schemeEnd.upperBound...]
        let authorityEnd = rest.firstIndex(where: { $0 == "/" || $0 == "?" }) ?? rest.endIndex
        let authority = rest[..<authorityEnd]
        guard let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") else { return text }
        return String(text[..<colon]) + ":***" + String(text[at...])
    }
}
