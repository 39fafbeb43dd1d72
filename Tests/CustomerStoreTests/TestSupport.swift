import BrokerTestSupport
import CreateCustomer
import CustomerDomain
@testable import CustomerStore
import Foundation
import GRDB
import PostgresNIO
@testable import PostgresStore
import Synchronization
import Testing

/// A fresh database of one kind: a SQLite file in its own folder or a PostgreSQL database of its own.
struct TestDatabase: Sendable {
    let kind: StoreKind
    /// The file path or the PostgreSQL URL.
    let location: String

    /// Opens another store on the same database (another process, as far as the store can tell),
    /// runs `body` with it (its client running, for PostgreSQL), and closes it.
    func withStore<T: Sendable>(migrate: Bool = false, _ body: (any CustomerStorage) async throws -> T) async throws -> T {
        switch kind {
        case .sqlite:
            // A generous lock wait: tests that race stores on one file must not fail because a
            // loaded machine made the other side's transaction slow.
            let store = try CustomerStore(path: location, busyTimeout: .seconds(60))
            if migrate { try await store.migrate() }
            return try await body(store)
        case .postgres:
            var logger = Logger(label: "test.postgres")
            logger.logLevel = .critical
            return try await PostgresStore(url: location, logger: logger).withRunningClient { store in
                if migrate { try await store.migrate() }
                return try await body(store)
            }
        }
    }
}

/// A migrated store on a fresh database of `kind`, removed afterwards.
@discardableResult
func withStore<T: Sendable>(
    _ kind: StoreKind, _ body: (any CustomerStorage, TestDatabase) async throws -> T
) async throws -> T {
    switch kind {
    case .sqlite:
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("customer-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        // A nested path: the store creates missing folders.
        let database = TestDatabase(kind: kind, location: folder.appendingPathComponent("nested/customers.sqlite").path)
        return try await database.withStore(migrate: true) { try await body($0, database) }
    case .postgres:
        let database = TestDatabase(kind: kind, location: try await TestPostgres.createDatabase())
        do {
            let result = try await database.withStore(migrate: true) { try await body($0, database) }
            await TestPostgres.dropDatabase(database.location)
            return result
        } catch {
            await TestPostgres.dropDatabase(database.location)
            throw error
        }
    }
}

extension CustomerStorage {
    /// Runs raw SQL (written to work on both databases) outside the store's own statements.
    func execute(_ sql: String) async throws {
        if let sqlite = self as? CustomerStore {
            try await sqlite.pool.write { try $0.execute(sql: sql) }
        } else if let postgres = self as? PostgresStore {
            try await postgres.transaction("test") { _ = try await $0.run(PostgresQuery(unsafeSQL: sql)) }
        }
    }

    /// Every row of a query whose columns are all text (cast them in the SQL).
    func strings(_ sql: String) async throws -> [[String?]] {
        if let sqlite = self as? CustomerStore {
            return try await sqlite.pool.read { db in
                try Row.fetchAll(db, sql: sql).map { row in row.databaseValues.map { String.fromDatabaseValue($0) } }
            }
        } else if let postgres = self as? PostgresStore {
            return try await postgres.transaction("test") { transaction in
                var rows: [[String?]] = []
                for try await row in try await transaction.run(PostgresQuery(unsafeSQL: sql)) {
                    rows.append(try row.map { try $0.decode(String?.self) })
                }
                return rows
            }
        }
        return []
    }
}

let now = Date(timeIntervalSince1970: 1_747_728_000.125)

func command(_ json: String, key: String?, contentType: String? = "application/json") -> IncomingCommand {
    IncomingCommand(apiKey: key, contentType: contentType, body: Array(json.utf8))
}

extension CustomerStorage {
    /// `handle`, also writing each reply to `$CONFORMANCE_OUTPUT_DIR` for the schema check.
    func handleRecording(_ commands: [IncomingCommand], test: String = #function) async throws -> [ReplyRecord] {
        let replies = try await handle(commands, now: now)
        Conformance.write(replies, test: test)
        return replies
    }

    func handleOne(_ command: IncomingCommand, test: String = #function) async throws -> ReplyRecord {
        try await handleRecording([command], test: test)[0]
    }
}

/// Writes reply bodies where `scripts/check-schemas.py` validates them against the schemas.
enum Conformance {
    private static let counter = Counter()

    static func write(_ replies: [ReplyRecord], test: String) {
        guard let folder = ProcessInfo.processInfo.environment["CONFORMANCE_OUTPUT_DIR"], !folder.isEmpty else { return }
        try? FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        let name = "store-" + test.prefix { $0.isLetter || $0.isNumber }
        for reply in replies {
            let kind = reply.type == .customerCreated ? "customer-created" : "customer-create-failed"
            let file = URL(fileURLWithPath: folder).appendingPathComponent("\(kind).\(name)-\(counter.next()).json")
            try? Data(reply.body).write(to: file)
        }
    }

    /// Unique file numbers across concurrently running tests.
    private final class Counter: Sendable {
        private let value = Mutex(0)
        func next() -> Int { value.withLock { $0 += 1; return $0 } }
    }
}

/// A merchant with its keys, in a migrated store.
struct Merchant {
    var id: String
    var secretKey: String
    var publishableKey: String

    init(_ store: any CustomerStorage, name: String = "Acme") async throws {
        let credentials = try await store.createMerchant(name: name, now: now)
        id = credentials.merchantId
        secretKey = credentials.secretKey
        publishableKey = credentials.publishableKey
    }
}

func decodeCreated(_ reply: ReplyRecord) throws -> CustomerCreated {
    try JSONDecoder().decode(CustomerCreated.self, from: Data(reply.body))
}

func decodeFailed(_ reply: ReplyRecord) throws -> CustomerCreateFailed {
    try JSONDecoder().decode(CustomerCreateFailed.self, from: Data(reply.body))
}

func catalog(_ json: String) throws -> PlanCatalog {
    try PlanCatalog.parse(Array(json.utf8)).get()
}
