import DatabaseURL
import Foundation
import Logging
import PostgresNIO
import PostgresStore

/// The stores the store and worker suites run against: SQLite always, PostgreSQL when
/// scripts/test.sh started one (and always under CI, where a missing server fails the tests).
public enum StoreKind: String, Sendable, CaseIterable {
    case sqlite, postgres

    public static var all: [StoreKind] { TestPostgres.enabled ? [.sqlite, .postgres] : [.sqlite] }
}

/// The private PostgreSQL server the tests talk to: `scripts/test.sh` starts it with
/// `scripts/postgres.sh start` and exports its URL as `POSTGRES_TEST_URL`. Each test gets a
/// database of its own, created from that server and dropped afterwards.
public enum TestPostgres {
    public static var url: String? {
        TestBroker.environment["POSTGRES_TEST_URL"].flatMap { $0.isEmpty ? nil : $0 }
    }

    /// Whether tests run against PostgreSQL too: when a server is named, and always under CI,
    /// where a missing server must fail the tests instead of leaving them out.
    public static var enabled: Bool { url != nil || TestBroker.isCI }

    public struct Unavailable: Error, CustomStringConvertible {
        public var description: String { "POSTGRES_TEST_URL is not set: run scripts/postgres.sh start and export its url" }
    }

    /// Creates an empty database and returns its URL; it is dropped when the test ends.
    public static func createDatabase() async throws -> String {
        guard let url else { throw Unavailable() }
        let name = "test_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try await administer(url) { connection, logger in
            try await connection.query("CREATE DATABASE \(unescaped: name)", logger: logger)
        }
        var components = try require(URLComponents(string: url))
        components.path = "/" + name
        let databaseURL = try require(components.string)
        TestResources.onExit("PostgreSQL database \(name)") { await dropDatabase(databaseURL) }
        return databaseURL
    }

    /// Opens a connection to `databaseURL` for `body` and closes it on every path (postgres-nio
    /// asserts, taking the whole test process down, when a connection is deinitialised open).
    public static func withConnection<T>(_ databaseURL: String, id: Int = 1,
                                         _ body: (PostgresConnection, Logger) async throws -> T) async throws -> T {
        let parsed = try PostgresURL(databaseURL)
        let logger = TestBroker.logger("postgres")
        let configuration = PostgresConnection.Configuration(
            host: parsed.host, port: parsed.port, username: parsed.username, password: parsed.password,
            database: parsed.database, tls: .disable)  // the test server of scripts/postgres.sh has no TLS
        let connection = try await PostgresConnection.connect(configuration: configuration, id: id, logger: logger)
        do {
            let result = try await body(connection, logger)
            try await connection.close()
            return result
        } catch {
            try? await connection.close()
            throw error
        }
    }

    /// Drops a database `createDatabase` made, closing its connections.
    public static func dropDatabase(_ databaseURL: String) async {
        guard let url, let name = URLComponents(string: databaseURL)?.path.dropFirst(), name.hasPrefix("test_") else { return }
        try? await administer(url) { connection, logger in
            try await connection.query("DROP DATABASE IF EXISTS \(unescaped: String(name)) WITH (FORCE)", logger: logger)
        }
    }

    /// Makes a database `createDatabase` made refuse new connections and closes the ones it has
    /// (an outage as its clients see it: the server answers, the database does not), or accept
    /// connections again.
    public static func setAcceptingConnections(_ databaseURL: String, _ accepting: Bool) async throws {
        guard let url, let name = URLComponents(string: databaseURL)?.path.dropFirst(), name.hasPrefix("test_") else {
            throw Unavailable()
        }
        try await administer(url) { connection, logger in
            try await connection.query("ALTER DATABASE \(unescaped: String(name)) ALLOW_CONNECTIONS \(unescaped: accepting ? "true" : "false")",
                                       logger: logger)
            if !accepting {
                try await connection.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(String(name)) AND pid <> pg_backend_pid()",
                    logger: logger)
            }
        }
    }

    private static func administer(_ url: String, _ body: (PostgresConnection, Logger) async throws -> Void) async throws {
        try await withConnection(url, body)
    }
}

/// `#require` for the support target, which cannot import Testing's macros everywhere.
private func require<T>(_ value: T?) throws -> T {
    guard let value else { throw TestPostgres.Unavailable() }
    return value
}
