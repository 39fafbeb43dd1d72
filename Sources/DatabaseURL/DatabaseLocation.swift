/// Where the customers live, from `DATABASE_URL`: a file path or `sqlite:` URL (SQLite, one host),
/// or `postgres://user:password@host:port/database?sslmode=…` (PostgreSQL, replicas on several hosts).
public enum DatabaseLocation: Sendable, Hashable {
    case sqlite(path: String)
    case postgres(PostgresURL)

    public init(_ text: String) throws(DatabaseLocationError) {
        if PostgresURL.matches(text) {
            do { self = .postgres(try PostgresURL(text)) } catch { throw DatabaseLocationError(message: error.description) }
            return
        }
        var path = Substring(text)
        if path.hasPrefix("sqlite://") {
            path = path.dropFirst("sqlite://".count)
        } else if path.hasPrefix("sqlite:") {
            path = path.dropFirst("sqlite:".count)
        } else if path.contains("://") {
            throw DatabaseLocationError(message: "unsupported database URL \(PostgresURL.redact(text)): use a file path, sqlite:PATH or postgres://…")
        }
        guard !path.isEmpty else { throw DatabaseLocationError(message: "the SQLite URL names no file") }
        self = .sqlite(path: String(path))
    }

    /// For logs and messages: the path, or the URL without its password.
    public var redacted: String {
        switch self {
        case .sqlite(let path): path
        case .postgres(let url): url.redacted
        }
    }
}

public struct DatabaseLocationError: Error, Sendable, CustomStringConvertible {
    public let message: String
    public var description: String { message }

    public init(message: String) { self.message = message }
}
