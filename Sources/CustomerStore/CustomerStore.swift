import CustomerDomain
import Foundation
import GRDB

/// One command as it came off the queue.
public struct IncomingCommand: Sendable {
    /// The `x-api-key` header.
    public var apiKey: String?
    /// The AMQP `content_type` property.
    public var contentType: String?
    public var body: [UInt8]

    public init(apiKey: String?, contentType: String?, body: [UInt8]) {
        self.apiKey = apiKey
        self.contentType = contentType
        self.body = body
    }
}

public enum ReplyType: String, Sendable {
    case customerCreated = "CustomerCreated"
    case customerCreateFailed = "CustomerCreateFailed"
}

/// The reply to publish for one command.
public struct ReplyRecord: Sendable, Equatable {
    public var type: ReplyType
    public var idempotencyKey: String?
    /// Deterministic per idempotency key and outcome; a replay carries the same.
    public var messageID: String
    /// Exact JSON bytes; a replay returns the stored bytes unchanged.
    public var body: [UInt8]
    public var replayed: Bool
    /// Nil for `CustomerCreated`.
    public var errorCode: String?

    public var routingKey: String { type == .customerCreated ? "customer.created" : "customer.create_failed" }

    public init(type: ReplyType, idempotencyKey: String?, messageID: String, body: [UInt8], replayed: Bool, errorCode: String?) {
        self.type = type
        self.idempotencyKey = idempotencyKey
        self.messageID = messageID
        self.body = body
        self.replayed = replayed
        self.errorCode = errorCode
    }
}

/// The customer database: one SQLite file in WAL mode that several processes may share.
///
/// Every write runs in a `BEGIN IMMEDIATE` transaction, so a process that finds another writer
/// waits up to the busy timeout instead of failing when it would upgrade a read lock.
public final class CustomerStore: Sendable {
    public let path: String
    let pool: DatabasePool

    /// Opens the database at `path`, creating its folder and file; does not migrate.
    public init(path: String, busyTimeout: Duration = .seconds(5)) throws {
        self.path = path
        let directory = URL(fileURLWithPath: path).deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw CustomerStoreError.cannotCreateDirectory(path: directory, reason: error.localizedDescription)
        }
        var configuration = Configuration()
        configuration.label = "customers"
        configuration.busyMode = .timeout(busyTimeout.seconds)
        configuration.foreignKeysEnabled = true
        configuration.maximumReaderCount = 4
        configuration.prepareDatabase { db in
            // WAL makes NORMAL durable against application crashes; only a power loss may lose the
            // last transactions, never corrupt the file.
            try db.execute(sql: "PRAGMA synchronous = NORMAL")
            // 16 MiB of page cache instead of 2: a batch touches pages all over the growing indexes.
            try db.execute(sql: "PRAGMA cache_size = -16384")
        }
        do {
            pool = try DatabasePool(path: path, configuration: configuration)
        } catch {
            throw CustomerStoreError.wrapping(error, operation: "open", path: path)
        }
    }

    /// Applies pending migrations. Safe when several processes start at once: a migration that
    /// lost the race to another process is retried after re-reading what is applied.
    public func migrate() throws {
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

    /// Handles commands in order inside one write transaction: authentication, validation,
    /// idempotency, and the customer, subscription and processed-request rows. Returns one reply
    /// per command, in order. Throws only when the database fails (busy past the timeout, disk
    /// full, I/O); then nothing was committed.
    /// `now` is truncated to whole milliseconds, the precision of replies and rows.
    public func handle(_ commands: [IncomingCommand], now: Date) async throws -> [ReplyRecord] {
        guard !commands.isEmpty else { return [] }
        // Parsing needs no lock, so it happens before the write transaction starts.
        let parsed = commands.map { CreateCustomerCommand.parse(body: $0.body, contentType: $0.contentType) }
        let timestamp = Timestamp(now)
        return try await write("handle commands") { db in
            var batch = CommandBatch(db: db, now: timestamp)
            return try zip(commands, parsed).map { command, result in try batch.handle(command, result) }
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

    /// Runs `body` in a `BEGIN IMMEDIATE` transaction and maps failures to `CustomerStoreError`.
    func write<T: Sendable>(_ operation: String, _ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        do {
            return try await pool.writeWithoutTransaction { db in
                var result: T?
                try db.inTransaction(.immediate) {
                    result = try body(db)
                    return .commit
                }
                return result!
            }
        } catch {
            throw CustomerStoreError.wrapping(error, operation: operation, path: path)
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

/// Identifiers the store mints: lowercase UUIDs.
func newIdentifier() -> String {
    UUID().uuidString.lowercased()
}
