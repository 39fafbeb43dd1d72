import CreateCustomer
import CustomerStore
import Foundation
import Logging
import PostgresStore
import ServiceLifecycle

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
}

/// A store opened on a `DatabaseLocation`, with the services that must run while it is used
/// (SQLite: the WAL checkpointer; PostgreSQL: the client's connection pool).
public struct OpenedStore: Sendable {
    public let storage: any CustomerStorage
    public let services: [any Service]

    /// `synchronous` applies to SQLite (PostgreSQL's durability is the server's own setting).
    public static func open(_ location: DatabaseLocation, busyTimeout: Duration, logger: Logger,
                            backgroundCheckpoints: Bool = false, synchronous: SynchronousMode = .full) throws -> OpenedStore {
        switch location {
        case .sqlite(let path):
            let store = try CustomerStore(path: path, busyTimeout: busyTimeout, backgroundCheckpoints: backgroundCheckpoints,
                                          synchronous: synchronous)
            return OpenedStore(storage: store, services: backgroundCheckpoints ? [Checkpointer(store: store, logger: logger)] : [])
        case .postgres(let url):
            let store = try PostgresStore(url: url, logger: logger)
            return OpenedStore(storage: store, services: [store])
        }
    }

    /// Opens the store, runs its services while `body` runs (migrating first when asked), and
    /// stops them: for commands that are not services themselves.
    public static func with<T: Sendable>(_ location: DatabaseLocation, busyTimeout: Duration = .seconds(5), logger: Logger,
                                         migrate: Bool, _ body: (any CustomerStorage) async throws -> T) async throws -> T {
        let opened = try open(location, busyTimeout: busyTimeout, logger: logger)
        return try await withThrowingTaskGroup(of: Void.self) { group in
            for service in opened.services {
                group.addTask { try await service.run() }
            }
            defer { group.cancelAll() }
            if migrate { try await opened.storage.migrate() }
            return try await body(opened.storage)
        }
    }
}

/// Checkpoints the database's write-ahead log beside the worker's transactions, several times a
/// second, until graceful shutdown reaches it.
struct Checkpointer: Service {
    let store: CustomerStore
    let logger: Logger

    func run() async {
        await cancelWhenGracefulShutdown {
            while !Task.isCancelled {
                do {
                    try await store.checkpoint()
                } catch where !Task.isCancelled {
                    logger.warning("checkpoint failed; SQLite's automatic checkpoint takes over", metadata: ["error": "\(error)"])
                } catch {
                    return  // cancelled by the shutdown
                }
                try? await Task.sleep(for: .milliseconds(200))  // cancelled at shutdown: the loop ends
            }
        }
    }
}

/// Migrates the store, then runs the worker: migrations need the store's services running
/// (PostgreSQL's pool), and the worker must not take a command before the schema is there.
struct MigratingWorker: Service {
    let storage: any CustomerStorage
    let worker: CommandWorker

    func run() async throws {
        try await storage.migrate()
        try await worker.run()
    }
}
