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
    /// A connection of its own for WAL checkpoints, so they run beside the writer, not in its commits.
    private let checkpointer: DatabaseQueue?

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
            checkpointing.busyMode = .timeout(busyTimeout.seconds)
            checkpointer = backgroundCheckpoints ? try DatabaseQueue(path: path, configuration: checkpointing) : nil
        } catch {
            throw CustomerStoreError.wrapping(error, operation: "open", path: path)
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

/// Identifiers the store mints: lowercase time-ordered UUIDs (version 7, RFC 9562). New rows
/// land at the end of the id indexes instead of on random pages, which keeps inserts cheap as
/// the tables grow; the 74 random bits keep ids unguessable and unique across processes.
func newIdentifier(now: Timestamp = Timestamp(Date())) -> String {
    var generator = SystemRandomNumberGenerator()
    let random = (generator.next() as UInt64, generator.next() as UInt64)
    let milliseconds = UInt64(max(0, now.millisecondsSince1970))
    let high = (milliseconds << 16) | 0x7000 | (random.0 & 0x0FFF)  // unix_ts_ms(48) | ver(4) | rand_a(12)
    let low = 0x8000_0000_0000_0000 | (random.1 & 0x3FFF_FFFF_FFFF_FFFF)  // var(2) | rand_b(62)
    let bytes = withUnsafeBytes(of: (high.bigEndian, low.bigEndian)) { Array($0) }
    let uuid = UUID(uuid: (bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
                           bytes[8], bytes[9], bytes[10], bytes[11], bytes[12], bytes[13], bytes[14], bytes[15]))
    return uuid.uuidString.lowercased()
}
