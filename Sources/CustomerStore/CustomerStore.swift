import CreateCustomer
import CustomerDomain
import Foundation
import GRDB

/// The customer database on SQLite: one file in WAL mode that several processes on one host may
/// share. An adapter only: the rules live in `CreateCustomer`.
///
/// Every write transaction is GRDB's own (`DatabasePool.write`: one closure, `BEGIN IMMEDIATE`,
/// committed when it returns), so a process that finds another writer waits up to the busy
/// timeout instead of failing when it would upgrade a read lock. A batch of create-customer
/// commands is one such closure: the core runs synchronously inside it.
public final class CustomerStore: CustomerStorage {
    public let path: String
    let pool: DatabasePool
    /// A connection of its own for WAL checkpoints, so they run beside the writer, not in its commits.
    private let checkpointer: DatabaseQueue?
    private let busyTimeout: Duration
    private let synchronous: SynchronousMode

    public var location: String { path }

    /// Opens the database at `path`, creating its folder and file; does not migrate.
    ///
    /// With `backgroundCheckpoints`, commits no longer copy the write-ahead log back into the
    /// database themselves (SQLite does that inside COMMIT every 1000 pages, fsync included); the
    /// owner calls `checkpoint()` regularly instead. SQLite's automatic checkpoint stays on at a
    /// larger size as a backstop, should the owner fall behind.
    ///
    /// `synchronous` is `.full` unless the owner opts into `.normal` (see `SynchronousMode`).
    public init(path: String, busyTimeout: Duration = .seconds(5), backgroundCheckpoints: Bool = false,
                synchronous: SynchronousMode = .full) throws {
        self.path = path
        self.busyTimeout = busyTimeout
        self.synchronous = synchronous
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CustomerStoreError.cannotCreateDirectory(path: directory, reason: error.localizedDescription)
        }
        var configuration = Configuration()
        configuration.label = "customers"
        configuration.busyMode = Self.busyMode(busyTimeout)
        configuration.foreignKeysEnabled = true
        configuration.maximumReaderCount = 4
        configuration.prepareDatabase { db in
            try db.execute(sql: synchronous.pragma)
            // 64 MiB of page cache instead of 2: the idempotency index is keyed by a hash, so a
            // batch touches pages all over it as the tables grow.
            try db.execute(sql: "PRAGMA cache_size = -65536")
            if backgroundCheckpoints { try db.execute(sql: "PRAGMA wal_autocheckpoint = 20000") }
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
            // GRDB sets NORMAL on the writer when it turns WAL on, after `prepareDatabase`.
            try pool.writeWithoutTransaction { try $0.execute(sql: synchronous.pragma) }
            var checkpointing = Configuration()
            checkpointing.label = "customers.checkpoint"
            checkpointing.busyMode = Self.busyMode(busyTimeout)
            checkpointer = backgroundCheckpoints ? try DatabaseQueue(path: path, configuration: checkpointing) : nil
        } catch {
            throw CustomerStoreError.wrapping(error, operation: "open", path: path)
        }
    }

    /// Waiting for another process's lock: a try every millisecond, until `timeout`'s worth of
    /// tries (then SQLITE_BUSY, as before). SQLite's own handler (`sqlite3_busy_timeout`) sleeps 1,
    /// 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, then 100 ms between tries: replicas on one file,
    /// whose transactions each hold the lock for a few milliseconds, slept up to 100 ms after it
    /// was free, and a light merchant's command beside a flood waited that long (BENCHMARKS.md).
    /// Like SQLite's, the timeout counts the sleeps planned, not the time measured. The sleep
    /// blocks GRDB's own queue, never Swift's cooperative pool.
    static func busyMode(_ timeout: Duration) -> Database.BusyMode {
        let tries = max(1, Int((timeout / .milliseconds(1)).rounded(.up)))
        return .callback { numberOfTries in
            guard numberOfTries < tries else { return false }
            usleep(1000)
            return true
        }
    }

    /// Copies what it can of the write-ahead log into the database without waiting for readers or
    /// writers (a PASSIVE checkpoint). Returns the log's size and what is checkpointed, in pages.
    @discardableResult
    public func checkpoint() async throws -> (logPages: Int, checkpointedPages: Int) {
        guard let checkpointer else { return (0, 0) }
        do {
            let result = try await checkpointer.writeWithoutTransaction { try $0.checkpoint(.passive) }
            return (result.walFrameCount, result.checkpointedFrameCount)
        } catch {
            throw CustomerStoreError.wrapping(error, operation: "checkpoint", path: path)
        }
    }

    /// Applies pending migrations. Safe when several processes start at once: a migration that
    /// lost the race to another process is retried after re-reading what is applied.
    public func migrate() async throws {
        try migrateNow()
    }

    /// `migrate()` for callers that cannot await (opening a store before the services run).
    public func migrateNow() throws {
        let migrator = Migrations.migrator
        var attempt = 0
        while true {
            do {
                try migrator.migrate(pool)
                return
            } catch {
                attempt += 1
                let done = (try? pool.read { try migrator.hasCompletedMigrations($0) }) ?? false
                if done { return }
                if attempt >= 5 { throw CustomerStoreError.wrapping(error, operation: "migrate", path: path) }
            }
        }
    }

    public func customerCount() async throws -> Int {
        try await read("count customers") { db in
            try Int.fetchOne(db, sql: "SELECT COUNT(*) FROM customers") ?? 0
        }
    }

    /// Health check: a tiny write transaction, which fails when the file cannot take writes.
    public func checkWritable() async throws {
        let now = Timestamp(Date()).millisecondsSince1970
        try await write("health check") { db in
            try db.execute(
                sql: "INSERT INTO health_checks (id, checked_at) VALUES (1, ?) ON CONFLICT(id) DO UPDATE SET checked_at = excluded.checked_at",
                arguments: [now])
        }
    }

    // MARK: - Transactions

    /// One GRDB write transaction on the pool's writer, failures mapped to `CustomerStoreError`.
    func write<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.write(body)
        } catch {
            throw CustomerStoreError.wrapping(error, operation: operation, path: path)
        }
    }

    /// An admin operation in one GRDB write transaction on the pool's writer, like a batch of
    /// commands: its reads, its decision and its writes run synchronously inside the closure.
    public func administer<Operation: AdminOperation>(_ operation: Operation) async throws -> Operation.Answer {
        try await write(operation.operation) { db in
            let decision = try operation.decide(try AdminStatements.read(operation.reads, db))
            for change in decision.writes { try AdminStatements.apply(change, db) }
            return decision.answer
        }
    }

    func read<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.read(body)
        } catch {
            throw CustomerStoreError.wrapping(error, operation: operation, path: path)
        }
    }
}

extension Duration {
    var seconds: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}

// MARK: - Copying into another store

extension CustomerStore {
    /// Up to `limit` rows of `table` after the cursor `after` (a rowid), with every column as stored.
    public func exportRows(_ table: CopiedTable, after: Int64?, limit: Int) async throws -> TableChunk {
        try await read("read \(table.rawValue)") { db in
            let rows = try Row.fetchAll(
                db, sql: "SELECT rowid AS copy_cursor, * FROM \(table.rawValue) WHERE rowid > ? ORDER BY rowid LIMIT ?",
                arguments: [after ?? Int64.min, limit])
            guard let first = rows.first else { return TableChunk(columns: [], rows: [], next: nil) }
            let columns = Array(first.columnNames.dropFirst())
            let cells = rows.map { row in
                Array(row.databaseValues.dropFirst()).map { value -> CellValue in
                    switch value.storage {
                    case .null: .null
                    case .int64(let integer): .integer(integer)
                    case .double(let double): .integer(Int64(double))
                    case .string(let string): .text(string)
                    case .blob(let data): .blob([UInt8](data))
                    }
                }
            }
            return TableChunk(columns: columns, rows: cells, next: rows.count < limit ? nil : rows.last?["copy_cursor"])
        }
    }
}
