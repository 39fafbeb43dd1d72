import CreateCustomer
import Foundation
import PostgresNIO
import _ConnectionPoolModule

/// Everything the PostgreSQL store throws (besides the admin rules' errors, passed through). No
/// case carries a password: URLs are redacted, server messages carry none.
public enum PostgresStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidURL(String, String)
    /// The server answered with an error; `sqlState` is its SQLSTATE (40P01 deadlock, 40001
    /// serialization failure, 23505 unique violation, …).
    case server(operation: String, location: String, sqlState: String, message: String)
    /// No answer: the server is unreachable, closed the connection or refused the login.
    case connection(operation: String, location: String, reason: String)
    case unexpected(operation: String, location: String, description: String)

    public var description: String {
        switch self {
        case .invalidURL(let url, let rule):
            "invalid PostgreSQL URL \(url): \(rule)"
        case .server(let operation, let location, let sqlState, let message):
            "\(operation) failed on \(location): PostgreSQL error \(sqlState): \(message)"
        case .connection(let operation, let location, let reason):
            "\(operation) failed on \(location): \(reason)"
        case .unexpected(let operation, let location, let description):
            "\(operation) failed on \(location): \(description)"
        }
    }

    /// SQLSTATEs (a whole class by its two first characters, or one code) and what they mean for
    /// the commands; a code is looked up before its class. A code in no row is `.unknown`: the
    /// worker pauses and logs it.
    public static let failureTable: [(sqlState: String, kind: StoreFailureClass, meaning: String)] = [
        ("40P01", .conflict, "deadlock detected"),
        ("40001", .conflict, "serialization failure"),
        ("08", .unavailable, "connection exception"),
        ("53", .unavailable, "insufficient resources (disk full, out of memory, too many connections)"),
        ("58", .unavailable, "system error (I/O)"),
        ("57P01", .unavailable, "admin shutdown"),
        ("57P02", .unavailable, "crash shutdown"),
        ("57P03", .unavailable, "cannot connect now (starting up)"),
        ("57014", .unavailable, "query canceled (statement_timeout)"),
        ("55P03", .unavailable, "lock not available (lock_timeout)"),
        ("55006", .unavailable, "object in use"),
        ("25006", .unavailable, "read-only transaction (a standby after a failover)"),
        ("42501", .unavailable, "insufficient privilege (a grant revoked)"),
        ("42P01", .unavailable, "undefined table (a schema not migrated yet)"),
        ("42703", .unavailable, "undefined column (a schema not migrated yet)"),
        ("3D000", .unavailable, "invalid catalog name (the database is gone)"),
        ("28", .unavailable, "invalid authorization"),
        ("23", .command, "integrity constraint violation"),
        ("22", .command, "data exception (a value out of range, invalid text)"),
        ("XX", .unknown, "internal error"),
    ]

    public var failure: StoreFailure {
        switch self {
        case .connection:
            return StoreFailure(.unavailable, code: "connection")
        case .server(_, _, let sqlState, _):
            let row = Self.failureTable.first { $0.sqlState == sqlState }
                ?? Self.failureTable.first { $0.sqlState.count == 2 && sqlState.hasPrefix($0.sqlState) }
            return StoreFailure(row?.kind ?? .unknown, code: "SQLSTATE \(sqlState)")
        case .invalidURL:
            return StoreFailure(.unavailable, code: "invalid URL")
        case .unexpected:
            return StoreFailure(.unknown, code: "unexpected")
        }
    }

    static func wrapping(_ error: any Error, operation: String, location: String) -> any Error {
        switch error {
        case let error as PostgresStoreError:
            return error
        case let error as ConnectionPoolError:
            // The pool's own verdicts: it stopped trying to connect (its circuit breaker opens after
            // a minute of failed attempts), or it is shut down (its client was replaced or stopped).
            let reason = error == .connectionCreationCircuitBreakerTripped
                ? "the connection pool stopped trying to connect (circuit breaker open after repeated failures)"
                : error == .poolShutdown ? "the connection pool is shut down" : "the connection request was cancelled"
            return PostgresStoreError.connection(operation: operation, location: location, reason: reason)
        case is ChannelError, is IOError, is NIOConnectionError:
            // The socket under a connection: the server cannot be reached.
            return PostgresStoreError.connection(operation: operation, location: location, reason: "cannot reach the server (\(error))")
        case let error as PSQLError:
            if let info = error.serverInfo {
                return PostgresStoreError.server(
                    operation: operation, location: location, sqlState: info[.sqlState] ?? "?????",
                    message: info[.message] ?? "no message")
            }
            return PostgresStoreError.connection(operation: operation, location: location, reason: Self.reason(error))
        default:
            // Our own errors (the admin rules') and anything else pass through; none carries the URL.
            return error
        }
    }

    /// What went wrong with the connection, in words; never the underlying error's own text,
    /// which could contain connection details.
    static func reason(_ error: PSQLError) -> String {
        switch error.code {
        case .connectionError: "cannot connect to the server" + (error.underlying.map { " (\(Self.describe($0)))" } ?? "")
        case .serverClosedConnection: "the server closed the connection"
        case .clientClosedConnection, .poolClosed: "the connection pool is closed (is the store's client running?)"
        case .sslUnsupported: "the server does not support TLS (sslmode requires it)"
        case .authMechanismRequiresPassword: "the server requires a password"
        case .unsupportedAuthMechanism: "the server asks for an unsupported authentication method"
        case .queryCancelled: "the query was cancelled"
        case .server: "the server refused: \(error.serverInfo?[.sqlState] ?? "") \(error.serverInfo?[.message] ?? "")"
        default: "PostgreSQL client error \(error.code)"
        }
    }

    /// A socket-level error in words: NIO's connect errors name the address, never credentials.
    private static func describe(_ error: any Error) -> String {
        if let error = error as? NIOConnectionError, let first = error.connectionErrors.first {
            return "\(first.error)"
        }
        return "\(error)"
    }
}
