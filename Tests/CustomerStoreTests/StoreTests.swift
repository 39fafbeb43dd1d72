import CustomerDomain
@testable import CustomerStore
import Foundation
import GRDB
import Testing

@Suite("Store: file, migrations, concurrency")
struct StoreTests {
    @Test func opensWithWALForeignKeysAndFullSync() async throws {
        try await withStore { store, path in
            #expect(FileManager.default.fileExists(atPath: path))
            let (journal, foreignKeys, synchronous) = try await store.pool.write { db in
                (try String.fetchOne(db, sql: "PRAGMA journal_mode"), try Int.fetchOne(db, sql: "PRAGMA foreign_keys"),
                 try Int.fetchOne(db, sql: "PRAGMA synchronous"))
            }
            #expect(journal == "wal")
            #expect(foreignKeys == 1)
            #expect(synchronous == 2, "synchronous=FULL by default")
            try store.migrate()
            try await store.checkWritable()
            #expect(try await store.customerCount() == 0)
            #expect(try await store.handle([], now: now).isEmpty)
        }
    }

    @Test func normalSyncIsAnOptIn() async throws {
        try await withStore { _, path in
            let relaxed = try CustomerStore(path: path, synchronous: .normal)
            #expect(try await relaxed.pool.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 1)
        }
    }

    @Test func reportsAnUncreatableFolder() throws {
        #expect(throws: CustomerStoreError.self) {
            try CustomerStore(path: "/proc/forbidden/customers.sqlite")
        }
    }

    @Test func busyErrorsAreRecognised() {
        let busy = CustomerStoreError.database(operation: "x", path: "p", code: 5, message: "database is locked")
        #expect(busy.isBusy)
        #expect(!CustomerStoreError.database(operation: "x", path: "p", code: 13, message: "full").isBusy)
    }

    @Test func processesMigrateTheSameFileAtOnce() async throws {
        try await withStore { _, path in
            let fresh = path + "-fresh.sqlite"
            let stores = try (0..<3).map { _ in try CustomerStore(path: fresh) }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for store in stores {
                    group.addTask { try store.migrate() }
                }
                try await group.waitForAll()
            }
            try await stores[0].checkWritable()
        }
    }

    /// Two stores on one file stand for two worker processes: each has its own connections and
    /// locks, so only SQLite's locking and the idempotency records keep them apart.
    @Test func twoStoresWritingConcurrentlyCreateNoDuplicates() async throws {
        try await withStore { store, path in
            let merchant = try await Merchant(store)
            let other = try CustomerStore(path: path)
            let commands = (0..<300).map {
                command(#"{"externalId":"race-\#($0)","name":"N\#($0)"}"#, key: merchant.secretKey)
            }
            let batches = stride(from: 0, to: commands.count, by: 25).map { Array(commands[$0..<min($0 + 25, commands.count)]) }
            async let fromFirst = Self.handleAll(batches, with: store)
            async let fromSecond = Self.handleAll(batches.reversed(), with: other)
            let (first, second) = try await (fromFirst, fromSecond)

            #expect(try await store.customerCount() == 300)
            #expect(first.count == 300 && second.count == 300)
            let all = first + second
            #expect(all.allSatisfy { $0.type == .customerCreated })
            #expect(all.filter { !$0.replayed }.count == 300)
            let byKey = Dictionary(grouping: all) { $0.idempotencyKey ?? "" }
            #expect(byKey.count == 300)
            #expect(byKey.values.allSatisfy { $0.count == 2 && $0[0].body == $0[1].body && $0[0].messageID == $0[1].messageID })
        }
    }

    private static func handleAll(_ batches: [[IncomingCommand]], with store: CustomerStore) async throws -> [ReplyRecord] {
        var replies: [ReplyRecord] = []
        for batch in batches {
            replies += try await store.handle(batch, now: now)
        }
        return replies
    }
}
