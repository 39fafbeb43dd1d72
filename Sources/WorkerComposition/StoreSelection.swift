import DatabaseURL
import CreateCustomer
import CustomerStore
import CustomerWorker
import Foundation
import Logging
import PostgresStore
import ServiceLifecycle

/// The composition root's store selection: which concrete store (`CustomerStore` for SQLite,
/// `PostgresStore`) a `DatabaseLocation` opens. Only the executables and the tests link it; the
/// `CustomerWorker` library works against `CustomerStorage` and opens no store itself.
///
/// A store opened on a `DatabaseLocation`, with the services that must run while it is used
/// (SQLite: the WAL checkpointer; PostgreSQL: the client's connection pool).
public struct OpenedStore: Sendable {
    public let storage: any CustomerStorage
    public let services: [any Service]

    /// `synchronous` applies to SQLite (PostgreSQL's durability is the server's own setting).
    public static func open(_ location: DatabaseLocation, busyTimeout: Duration, logger: Logger,
                            backgroundCheckpoints: Bool = false, synchronous: DatabaseSynchronous = .full) throws -> OpenedStore {
        switch location {
        case .sqlite(let path):
            let store = try CustomerStore(path: path, busyTimeout: busyTimeout, backgroundCheckpoints: backgroundCheckpoints,
                                          synchronous: synchronous.sqliteMode)
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

extension DatabaseSynchronous {
    /// The SQLite setting behind the worker's `DATABASE_SYNCHRONOUS`.
    var sqliteMode: SynchronousMode {
        switch self {
        case .full: .full
        case .normal: .normal
        }
    }
}
