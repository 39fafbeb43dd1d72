import CreateCustomer
import CustomerDomain
@testable import CustomerStore
import Foundation
import BrokerTestSupport
import GRDB
import PostgresNIO
@testable import PostgresStore
import Testing

@Suite("Store: database, migrations, concurrency", .closesResources)
struct StoreTests {
    @Test func sqliteOpensWithWALForeignKeysAndFullSync() async throws {
        try await withStore(.sqlite) { store, database in
            #expect(FileManager.default.fileExists(atPath: database.location))
            let sqlite = try #require(store as? CustomerStore)
            let (journal, foreignKeys, synchronous) = try await sqlite.pool.write { db in
                (try String.fetchOne(db, sql: "PRAGMA journal_mode"), try Int.fetchOne(db, sql: "PRAGMA foreign_keys"),
                 try Int.fetchOne(db, sql: "PRAGMA synchronous"))
            }
            #expect(journal == "wal")
            #expect(foreignKeys == 1)
            #expect(synchronous == 2, "synchronous=FULL by default")
        }
    }

    @Test func sqliteNormalSyncIsAnOptIn() async throws {
        try await withStore(.sqlite) { _, database in
            let relaxed = try CustomerStore(path: database.location, synchronous: .normal)
            #expect(try await relaxed.pool.write { try Int.fetchOne($0, sql: "PRAGMA synchronous") } == 1)
        }
    }

    @Test(arguments: StoreKind.all)
    func migratingTwiceIsHarmlessAndTheStoreTakesWrites(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            try await store.migrate()
            try await store.checkWritable()
            #expect(try await store.customerCount() == 0)
            #expect(try await store.handle([], now: now).isEmpty)
        }
    }

    /// Migration v3 rebuilds `processed_requests` without its index on the idempotency key, and v4
    /// renames its reply column: the records a v2 database holds (the reply itself) still replay
    /// byte for byte, and a new command still creates.
    @Test func sqliteRecordsWrittenBeforeV3StillReplay() async throws {
        try await withSQLiteFile(migratedUpTo: "v2: handling attempts") { store in
            let merchant = try await Merchant(store)
            // This version's statements name v4's column: renamed for the command, then back, with the
            // record holding what a v2 worker stored, the reply itself.
            try await store.pool.write { try $0.execute(sql: "ALTER TABLE processed_requests RENAME COLUMN reply_body TO stored_reply") }
            let before = try await store.handle([command(#"{"externalId":"cus_1","name":"Ada"}"#, key: merchant.secretKey)], now: now)
            try await store.pool.write { db in
                try db.execute(sql: "ALTER TABLE processed_requests RENAME COLUMN stored_reply TO reply_body")
                try db.execute(sql: "UPDATE processed_requests SET reply_body = ?", arguments: [Data(before[0].body)])
                #expect(try Data.fetchOne(db, sql: "SELECT reply_body FROM processed_requests") == Data(before[0].body))
            }
            try await store.migrate()
            // (name, unique, columns) of each index of the table.
            let indexes = try await store.pool.read { db in
                try Row.fetchAll(db, sql: "PRAGMA index_list(processed_requests)").map { index -> [String] in
                    let name: String = index["name"]
                    let unique: Bool = index["unique"]
                    return [name, "\(unique)"] + (try String.fetchAll(db, sql: "SELECT name FROM pragma_index_info(?)", arguments: [name]))
                }
            }
            #expect(indexes.count == 1 && indexes.first?[1] == "true", "only the unique index on customer_id: \(indexes)")
            let indexed = indexes.first.map { Array($0.dropFirst(2)) }
            #expect(indexed == ["customer_id"])
            try await expectEarlierRecordReplays(before[0], store, merchant)
        }
    }

    /// A SQLite file of its own, migrated up to `version` (an upgrade's starting point), removed after.
    private func withSQLiteFile(migratedUpTo version: String, _ body: (CustomerStore) async throws -> Void) async throws {
        let folder = FileManager.default.temporaryDirectory.appendingPathComponent("customer-store-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: folder) }
        let store = try CustomerStore(path: folder.appendingPathComponent("customers.sqlite").path)
        try Migrations.migrator.migrate(store.pool, upTo: version)
        try await body(store)
    }

    /// After a migration: the record of `cus_1` written before it (`before`) replays byte for
    /// byte, a new command creates, and a second record for a customer is refused (one record per
    /// customer keeps keys unique).
    private func expectEarlierRecordReplays(_ before: ReplyRecord, _ store: any CustomerStorage, _ merchant: Merchant) async throws {
        let after = try await store.handle([
            command(#"{"name":"Ada","externalId":"cus_1"}"#, key: merchant.secretKey),
            command(#"{"externalId":"cus_2"}"#, key: merchant.secretKey),
        ], now: now)
        #expect(after[0].replayed && after[0].body == before.body && after[0].messageID == before.messageID)
        #expect(after[1].type == .customerCreated && !after[1].replayed)
        #expect(try await store.customerCount() == 2)
        await #expect(throws: (any Error).self) {
            try await store.execute("""
                INSERT INTO processed_requests SELECT 'another key', merchant_id, fingerprint, customer_id, reply_type,
                    message_id, stored_reply, created_at FROM processed_requests LIMIT 1
                """)
        }
    }

    /// The create path's statements are stepped directly (`DirectStatement`): a step that fails
    /// throws the error GRDB would (classified by the same table), the transaction rolls back
    /// (nothing of the batch stays), and the statement, reset, serves the next batch.
    @Test func sqliteFailedDirectStepIsClassifiedRolledBackAndReusable() async throws {
        try await withStore(.sqlite) { store, _ in
            let sqlite = try #require(store as? CustomerStore)
            let merchant = try await Merchant(store)
            try await store.execute("""
                CREATE TRIGGER refuse_records BEFORE INSERT ON processed_requests
                BEGIN SELECT RAISE(ABORT, 'records refused by a test trigger'); END
                """)
            let batch = [command(#"{"externalId":"cus_1","name":"Ada"}"#, key: merchant.secretKey),
                         command(#"{"externalId":"cus_2","name":null}"#, key: merchant.secretKey)]
            let failure = await #expect(throws: CustomerStoreError.self) { try await store.handle(batch, now: now) }
            let classified = try #require(failure.map { CustomerStore.classify($0) })
            // RAISE(ABORT) is SQLITE_CONSTRAINT_TRIGGER (1811): this command's own fault, as before.
            #expect(classified == StoreFailure(.command, code: "SQLITE_CONSTRAINT (1811)"))
            #expect("\(failure.map { "\($0)" } ?? "")".contains("records refused by a test trigger"))
            #expect(try await store.customerCount() == 0, "the customers inserted before the failed step are rolled back")

            try await store.execute("DROP TRIGGER refuse_records")
            let replies = try await store.handle(batch, now: now)
            #expect(replies.map(\.type) == [.customerCreated, .customerCreated])
            #expect(try await store.customerCount() == 2)
            // Text goes in as text, a null or absent field as NULL.
            let rows = try await sqlite.pool.read { db in
                try Row.fetchAll(db, sql: "SELECT external_id, name, typeof(name), email FROM customers ORDER BY external_id")
                    .map { row -> [String?] in [row[0], row[1], row[2], row[3]] }
            }
            #expect(rows == [["cus_1", "Ada", "text", nil], ["cus_2", nil, "null", nil]])
            let replay = try await store.handle(batch, now: now)
            #expect(replay.map(\.replayed) == [true, true] && replay.map(\.body) == replies.map(\.body))
        }
    }

    /// Values bound from the statement's own blocks (`SQLITE_STATIC`) are stored as bound, row
    /// after row; a value larger than a block gets a block of its own; a parameter not bound
    /// again for a row is NULL, never the last row's value (the blocks are reused).
    @Test func sqliteDirectStatementBindsEachRowsOwnValues() async throws {
        try await withStore(.sqlite) { store, _ in
            let sqlite = try #require(store as? CustomerStore)
            let large = String(repeating: "é", count: 20_000)  // 40,000 bytes of UTF-8
            let rows = try await sqlite.pool.write { db -> [[String?]] in
                try db.execute(sql: "CREATE TEMP TABLE bound (a TEXT, b TEXT, c BLOB)")
                let insert = try DirectStatement(db, sql: "INSERT INTO bound (a, b, c) VALUES (?, ?, ?)")
                try insert.bind("first", at: 1)
                try insert.bind("one", at: 2)
                try insert.bind(blob: Array("blob one".utf8), at: 3)
                try insert.execute()
                try insert.bind(large, at: 1)
                try insert.bind("", at: 2)
                try insert.bind(blob: [UInt8](repeating: 7, count: 30_000), at: 3)
                try insert.execute()
                try insert.bind("third", at: 1)  // b and c not bound again
                try insert.execute()
                return try Row.fetchAll(db, sql: "SELECT a, b, typeof(b), length(c), typeof(c) FROM bound ORDER BY rowid")
                    .map { row in [row[0], row[1], row[2], (row[3] as Int?).map(String.init), row[4]] }
            }
            #expect(rows[0] == ["first", "one", "text", "8", "blob"])
            #expect(rows[1] == [large, "", "text", "30000", "blob"])
            #expect(rows[2] == ["third", nil, "null", nil, "null"])
        }
    }

    /// One step of a multi-row insert binds more bytes than a block holds: each value is stored as
    /// bound, across blocks, and the next step reuses them with its own values.
    @Test func sqliteMultiRowInsertBindsEveryRowAcrossBlocks() async throws {
        try await withStore(.sqlite) { store, _ in
            let sqlite = try #require(store as? CustomerStore)
            let insert = MultiRowInsert(head: "INSERT INTO bound (a, b)", parameterOfEachColumn: [1, 2], tail: "")
            // 64 rows of 1,000 + 700 bytes: about 109 KB, seven blocks of 16 KiB.
            let value = { @Sendable (step: Int, row: Int, length: Int) in String(repeating: String(UnicodeScalar(UInt8(97 + (step * 7 + row) % 26))), count: length) }
            let rows = try await sqlite.pool.write { db -> [[String]] in
                try db.execute(sql: "CREATE TEMP TABLE bound (a TEXT, b BLOB)")
                for step in 0..<2 {
                    let statement = try DirectStatement(db, sql: insert.sql(rows: 64))
                    for row in 0..<64 {
                        try statement.bind(value(step, row, 1_000), at: insert.firstParameter(ofRow: row))
                        try statement.bind(blob: Array(value(step, row, 700).utf8), at: insert.firstParameter(ofRow: row) + 1)
                    }
                    try statement.execute()
                }
                return try Row.fetchAll(db, sql: "SELECT a, CAST(b AS TEXT) FROM bound ORDER BY rowid").map { [$0[0], $0[1]] }
            }
            #expect(rows.count == 128)
            for (index, row) in rows.enumerated() {
                #expect(row == [value(index / 64, index % 64, 1_000), value(index / 64, index % 64, 700)], "row \(index)")
            }
        }
    }

    /// Migration v5 drops the index on subscriptions by customer (no query uses it), on a database
    /// that had it (migrated up to v4 first) as on a fresh one; the plan index stays (the admin
    /// path reads subscriptions by merchant and plan).
    @Test func sqliteSubscriptionsKeepOnlyTheIndexesAQueryUses() async throws {
        try await withSQLiteFile(migratedUpTo: "v4: records hold their reply in its stored form") { store in
            let indexes = { @Sendable in
                try await store.pool.read { try String.fetchAll($0, sql: "SELECT name FROM pragma_index_list('subscriptions') ORDER BY name") }
            }
            #expect(try await indexes() == ["sqlite_autoindex_subscriptions_1", "subscriptions_customer", "subscriptions_plan"])
            try await store.migrate()
            #expect(try await indexes() == ["sqlite_autoindex_subscriptions_1", "subscriptions_plan"])
        }
    }

    /// Migration v6 rebuilds `subscriptions` with its status rule written as comparisons: a
    /// subscription written before (migrated up to v5 first) is still there with its index, a new
    /// command still subscribes, and a status outside the rule is still refused.
    @Test func sqliteSubscriptionsRebuiltByV6KeepTheirRowsAndTheirRule() async throws {
        try await withSQLiteFile(migratedUpTo: "v5: no index on subscriptions by customer") { store in
            let merchant = try await Merchant(store)
            try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(planEntry("free", isDefault: true))))
            let before = try await store.handleOne(command(#"{"externalId":"c1"}"#, key: merchant.secretKey))
            let rows = { @Sendable in
                try await store.strings("SELECT customer_id, plan_id, status FROM subscriptions ORDER BY created_at, id")
            }
            let written = try await rows()
            #expect(written.count == 1)
            try await store.migrate()
            #expect(try await rows() == written)
            #expect(try await store.pool.read { try String.fetchAll($0, sql: "SELECT name FROM pragma_index_list('subscriptions') ORDER BY name") }
                == ["sqlite_autoindex_subscriptions_1", "subscriptions_plan"])
            let replay = try await store.handleOne(command(#"{"externalId":"c1"}"#, key: merchant.secretKey))
            #expect(replay.replayed && replay.body == before.body)
            let created = try await store.handleOne(command(#"{"externalId":"c2"}"#, key: merchant.secretKey))
            #expect(try decodeCreated(created).defaultPlan == DefaultPlanResult(outcome: .subscribed, planId: "free"))
            #expect(try await rows().count == 2)
            await #expect(throws: (any Error).self) {
                try await store.execute("UPDATE subscriptions SET status = 'paused'")
            }
        }
    }

    /// The statements that write customers, their subscriptions and their records, in every size,
    /// build no temporary B-tree per execution (an `IN` list of three values in a `CHECK` did,
    /// once per customer; a multi-row `VALUES` runs as a co-routine, not through a table).
    @Test func sqliteCreateStatementsOpenNoTemporaryBTree() async throws {
        try await withStore(.sqlite) { store, _ in
            let sqlite = try #require(store as? CustomerStore)
            let inserts = [CreateCustomerStatements.insertCustomers, CreateCustomerStatements.insertSubscriptions,
                           CreateCustomerStatements.insertRecords]
            for sql in inserts.flatMap({ insert in RowChunks.sizes.map { insert.sql(rows: $0) } }) {
                // On the writer, as the worker prepares them (a reader, read-only, compiles no CHECK).
                let opcodes = try await sqlite.pool.write { db in
                    let explain = try db.makeStatement(sql: "EXPLAIN " + sql)
                    explain.setUncheckedArguments([])  // the plan, without values
                    return try Row.fetchAll(explain).map { row -> String in row["opcode"] }
                }
                #expect(!opcodes.isEmpty)
                #expect(!opcodes.contains("OpenEphemeral"), "\(sql)")
            }
        }
    }

    /// A batch's customers go in multi-row statements (on SQLite, chunks of 64, 32, … rows). A
    /// customer that already exists (here one without a record, as a lost race leaves none
    /// visible to the insert) is skipped by its chunk's statement: the other customers of the
    /// chunk are still created, each with its subscription and record, that one alone is answered
    /// from what exists, and the whole batch replays byte for byte.
    @Test(arguments: StoreKind.all)
    func aChunkWithAnExistingCustomerStillCreatesTheOthers(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(planEntry("free", isDefault: true))))
            let existingID = "01890a5d-ac96-7000-8000-000000000005"
            try await store.execute("""
                INSERT INTO customers (id, merchant_id, external_id, created_at, updated_at)
                VALUES ('\(existingID)', '\(merchant.id)', 'chunk-5', 0, 0)
                """)
            // 70 commands: on SQLite a chunk of 64 (holding the existing one), then 4 and 2.
            let batch = (0..<70).map { command(#"{"externalId":"chunk-\#($0)","name":"N\#($0)"}"#, key: merchant.secretKey) }
            let replies = try await store.handle(batch, now: now)
            #expect(replies[5].errorCode == "external_id_conflict")
            #expect(try decodeFailed(replies[5]).error.existingCustomerId == existingID)
            let others = replies.indices.filter { $0 != 5 }
            #expect(others.allSatisfy { replies[$0].type == .customerCreated && !replies[$0].replayed })
            #expect(try others.allSatisfy { try decodeCreated(replies[$0]).customer.attributes.name == "N\($0)" })
            #expect(try await store.customerCount() == 70)
            let counts = try await store.strings("""
                SELECT CAST((SELECT COUNT(*) FROM subscriptions) AS TEXT), CAST((SELECT COUNT(*) FROM processed_requests) AS TEXT),
                       CAST((SELECT COUNT(*) FROM processed_requests WHERE customer_id = '\(existingID)') AS TEXT)
                """)
            #expect(counts == [["69", "69", "0"]])
            let replay = try await store.handle(batch, now: now)
            #expect(others.allSatisfy { replay[$0].replayed && replay[$0].body == replies[$0].body })
            #expect(replay[5].body == replies[5].body)
        }
    }

    /// A batch's records are looked up a merchant at a time, in chunks (on SQLite, one statement
    /// per chunk of 64, 32, … external ids): two merchants with the same external ids, one of them
    /// past a chunk's size, each replay their own replies, byte for byte.
    @Test(arguments: StoreKind.all)
    func recordsAreLookedUpPerMerchantAcrossChunks(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let first = try await Merchant(store)
            let second = try await Merchant(store)
            let ofFirst = (0..<70).map { command(#"{"externalId":"ext-\#($0)","name":"First \#($0)"}"#, key: first.secretKey) }
            let ofSecond = (0..<5).map { command(#"{"externalId":"ext-\#($0)","name":"Second \#($0)"}"#, key: second.secretKey) }
            // Interleaved: the second merchant's commands among the first's.
            let batch = Array(ofFirst[0..<30]) + ofSecond + Array(ofFirst[30...])
            let created = try await store.handle(batch, now: now)
            #expect(created.allSatisfy { $0.type == .customerCreated && !$0.replayed })
            #expect(try await store.customerCount() == 75)
            let replayed = try await store.handle(batch, now: now)
            #expect(replayed.allSatisfy { $0.replayed })
            #expect(replayed.map(\.body) == created.map(\.body))
            #expect(try decodeCreated(replayed[30]).customer.attributes.name == "Second 0")
            #expect(try decodeCreated(replayed[0]).customer.attributes.name == "First 0")

            // The lookup itself finds each merchant's own record, and none for an unknown id.
            // (A lookup that missed would not show above: the insert would then lose to the
            // existing customer, and the lost race's own lookup would find the record.)
            guard let sqlite = store as? CustomerStore else { return }
            let lookups = [(first, "ext-3"), (second, "ext-3"), (first, "ext-69"), (second, "ext-69"), (second, "ext-4")].map { merchant, externalID in
                RecordLookup(idempotencyKey: idempotencyKey(merchantID: merchant.id, externalID: externalID),
                             customer: CustomerReference(merchantID: merchant.id, externalID: externalID))
            }
            let found = try await sqlite.pool.read { db in try CreateCustomerStatements.processedRequests(lookups, db) }
            let expected = [lookups[0], lookups[1], lookups[2], lookups[4]].map { [$0.customer.merchantID, $0.idempotencyKey] }
            #expect(Set(found.map { [$0.merchantID, $0.idempotencyKey] }) == Set(expected))
            #expect(found.count == 4)
        }
    }

    @Test func postgresRecordsEachMigrationOnce() async throws {
        guard StoreKind.all.contains(.postgres) else { return }
        try await withStore(.postgres) { store, _ in
            let postgres = try #require(store as? PostgresStore)
            try await postgres.migrate()
            #expect(try await postgres.appliedMigrations() == PostgresMigrations.all.map(\.version))
        }
    }

    /// Migration 4 gives PostgreSQL SQLite's shape (v3, v5): a record is found through its
    /// customer, so the records lose their index on the idempotency key for a unique one on the
    /// customer, and subscriptions their customer index. A record written before still replays
    /// byte for byte, a new command still creates, and a second record for a customer is refused.
    @Test(.enabled(if: TestPostgres.enabled, "no PostgreSQL: run scripts/postgres.sh start and export POSTGRES_TEST_URL"))
    func postgresRecordsWrittenBeforeMigration4StillReplay() async throws {
        let database = TestDatabase(kind: .postgres, location: try await TestPostgres.createDatabase())
        do {
            try await database.withStore { store in
                let postgres = try #require(store as? PostgresStore)
                try await postgres.migrate(through: 3)
                let merchant = try await Merchant(store)
                let before = try await store.handle([command(#"{"externalId":"cus_1","name":"Ada"}"#, key: merchant.secretKey)], now: now)
                try await postgres.migrate()
                #expect(try await postgres.appliedMigrations() == PostgresMigrations.all.map(\.version))
                let indexes = try await store.strings("""
                    SELECT indexname::text FROM pg_indexes WHERE tablename IN ('processed_requests', 'subscriptions') ORDER BY indexname
                    """).map { $0[0] ?? "" }
                #expect(indexes == ["processed_requests_customer_id_key", "subscriptions_pkey", "subscriptions_plan"])
                try await expectEarlierRecordReplays(before[0], store, merchant)
            }
        } catch {
            await TestPostgres.dropDatabase(database.location)
            throw error
        }
        await TestPostgres.dropDatabase(database.location)
    }

    /// A batch without markers runs on PostgreSQL without BEGIN and COMMIT: its one write
    /// statement is still all or nothing. A trigger refusing the records fails it, and none of the
    /// customers the same statement inserted stays; without the trigger the batch creates both.
    @Test(.enabled(if: TestPostgres.enabled, "no PostgreSQL: run scripts/postgres.sh start and export POSTGRES_TEST_URL"))
    func postgresBatchWriteIsAllOrNothingWithoutBeginAndCommit() async throws {
        try await withStore(.postgres) { store, _ in
            let merchant = try await Merchant(store)
            try await store.execute("""
                CREATE FUNCTION refuse_records() RETURNS trigger LANGUAGE plpgsql
                AS $$ BEGIN RAISE EXCEPTION 'records refused by a test trigger'; END $$
                """)
            try await store.execute("CREATE TRIGGER refuse_records BEFORE INSERT ON processed_requests FOR EACH ROW EXECUTE FUNCTION refuse_records()")
            let batch = [command(#"{"externalId":"cus_1","name":"Ada"}"#, key: merchant.secretKey),
                         command(#"{"externalId":"cus_2"}"#, key: merchant.secretKey)]
            let failure = await #expect(throws: (any Error).self) { try await store.handle(batch, now: now) }
            #expect("\(failure.map { "\($0)" } ?? "")".contains("records refused by a test trigger"))
            #expect(try await store.customerCount() == 0, "the customers inserted by the failed statement are rolled back")
            try await store.execute("DROP TRIGGER refuse_records ON processed_requests")
            #expect(try await store.handle(batch, now: now).map(\.type) == [.customerCreated, .customerCreated])
            #expect(try await store.customerCount() == 2)
        }
    }

    @Test func reportsAnUncreatableFolder() throws {
        #expect(throws: CustomerStoreError.self) {
            try CustomerStore(path: "/proc/forbidden/customers.sqlite")
        }
    }

    /// Waiting for another process's lock: a try every millisecond until the busy timeout's worth
    /// of tries, then SQLITE_BUSY (the callback answers false).
    @Test func aLockedDatabaseIsTriedEveryMillisecondUntilTheBusyTimeout() throws {
        guard case .callback(let tryAgain) = CustomerStore.busyMode(.milliseconds(3)) else {
            Issue.record("the store's busy mode is not its own callback")
            return
        }
        #expect((0..<3).allSatisfy { tryAgain($0) })
        #expect(!tryAgain(3))
        guard case .callback(let atLeastOnce) = CustomerStore.busyMode(.microseconds(10)) else { return }
        #expect(atLeastOnce(0) && !atLeastOnce(1), "a timeout under a millisecond still tries once more")
    }

    @Test func busyErrorsAreRecognised() {
        let busy = CustomerStoreError.database(operation: "x", path: "p", code: 5, message: "database is locked")
        #expect(busy.isBusy)
        #expect(!CustomerStoreError.database(operation: "x", path: "p", code: 13, message: "full").isBusy)
    }

    /// `sslmode=require` against a server without TLS fails with a reason, not a hang, and the
    /// error carries no password.
    @Test(.enabled(if: TestPostgres.enabled, "no PostgreSQL: run scripts/postgres.sh start and export POSTGRES_TEST_URL"))
    func postgresTLSRequiredButUnavailableFailsClearly() async throws {
        let url = try #require(TestPostgres.url)
        var components = try #require(URLComponents(string: url))
        components.user = "postgres"
        components.password = "s3cr3t-pw"
        components.queryItems = [URLQueryItem(name: "sslmode", value: "require"), URLQueryItem(name: "connect_timeout", value: "5")]
        let store = try PostgresStore(url: try #require(components.string), logger: TestBroker.logger("test.tls"))
        try await store.withRunningClient { store in
            do {
                try await store.checkWritable()
                Issue.record("a TLS connection to a server without TLS succeeded")
            } catch {
                #expect("\(error)".contains("TLS"), "\(error)")
                #expect(!"\(error)".contains("s3cr3t-pw"))
            }
        }
    }

    /// A transaction the server does not finish within `answer_timeout` is ended on the server
    /// (its statement cancelled, its session terminated, its locks released), not only
    /// disconnected: a closed socket alone leaves a backend running its statement until it next
    /// writes to the client (here, a minute of `pg_sleep`).
    @Test(.enabled(if: TestPostgres.enabled, "no PostgreSQL: run scripts/postgres.sh start and export POSTGRES_TEST_URL"))
    func postgresTransactionAbandonedAtTheAnswerTimeoutIsEndedOnTheServer() async throws {
        let location = try await TestPostgres.createDatabase()
        var components = try #require(URLComponents(string: location))
        components.queryItems = (components.queryItems ?? []) + [URLQueryItem(name: "answer_timeout", value: "2")]
        let store = try PostgresStore(url: try #require(components.string), logger: TestBroker.logger("test.answer-timeout"))
        let marker = "answer_timeout_probe_\(UInt32.random(in: 0...UInt32.max))"
        let running = """
            SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%\(marker)%' AND query NOT LIKE '%pg_stat_activity%'
            """
        try await store.withRunningClient { store in
            let start = ContinuousClock.now
            do {
                _ = try await store.transaction("sleep") { transaction in
                    try await transaction.run(PostgresQuery(unsafeSQL: "SELECT pg_sleep(60), '\(marker)'"))
                }
                Issue.record("a minute of pg_sleep answered within answer_timeout")
            } catch {
                #expect("\(error)".contains("answer_timeout"), "\(error)")
            }
            #expect(ContinuousClock.now - start < .seconds(20))
            try await TestPostgres.withConnection(location) { connection, logger in
                var left = -1
                let deadline = ContinuousClock.now + .seconds(5)
                repeat {
                    for try await count in try await connection.query(PostgresQuery(unsafeSQL: running), logger: logger).decode(Int.self) {
                        left = count
                    }
                    if left == 0 { break }
                    try await Task.sleep(for: .milliseconds(100))
                } while ContinuousClock.now < deadline
                #expect(left == 0, "the statement still runs on the server")
            }
        }
    }

    /// A real deadlock: another transaction holds the batch's second key and then asks for its
    /// first. PostgreSQL aborts the batch, which the store reports as a `.conflict` (nothing
    /// committed); run again (as the worker's `DeliveryFate` does), the batch finds both customers
    /// there without processed records and answers `external_id_conflict` for each: never an error.
    ///
    /// The victim is whichever side's deadlock check runs once the cycle exists, so the cycle is
    /// built before the batch's wait for `second` begins: a trigger holds the batch's insert of
    /// `second` on an advisory lock until the other transaction waits for `first`; then the lock
    /// is released, the batch waits, and its check (after 1 s) finds the cycle. The other side
    /// never checks (`deadlock_timeout` 1 h), whatever the machine's speed.
    @Test(.enabled(if: TestPostgres.enabled, "no PostgreSQL: run scripts/postgres.sh start and export POSTGRES_TEST_URL"))
    func postgresDeadlockIsAConflictAndRunningAgainAnswers() async throws {
        try await withStore(.postgres) { store, database in
            let merchant = try await Merchant(store)
            let externalIDs = ["dl-a", "dl-b"].sorted {
                idempotencyKey(merchantID: merchant.id, externalID: $0) < idempotencyKey(merchantID: merchant.id, externalID: $1)
            }
            let (first, second) = (externalIDs[0], externalIDs[1])  // the batch inserts `first` first
            let gate: Int64 = 4_242
            try await TestPostgres.withConnection(database.location, id: 1) { other, logger in
                try await TestPostgres.withConnection(database.location, id: 2) { observer, _ in
                    try await observer.query("""
                        CREATE FUNCTION hold_second() RETURNS trigger LANGUAGE plpgsql AS $$
                        BEGIN
                          IF NEW.external_id = \(unescaped: "'" + second + "'") AND NEW.id NOT LIKE 'other-%' THEN
                            PERFORM pg_advisory_xact_lock_shared(\(unescaped: String(gate)));
                          END IF;
                          RETURN NEW;
                        END $$
                        """, logger: logger)
                    try await observer.query(
                        "CREATE TRIGGER hold_second BEFORE INSERT ON customers FOR EACH ROW EXECUTE FUNCTION hold_second()", logger: logger)
                    try await observer.query("SELECT pg_advisory_lock(\(gate))", logger: logger)
                    try await other.query("SET deadlock_timeout = '1h'", logger: logger)
                    try await other.query("BEGIN", logger: logger)
                    try await other.query("""
                        INSERT INTO customers (id, merchant_id, external_id, created_at, updated_at)
                        VALUES ('other-second', \(merchant.id), \(second), 0, 0)
                        """, logger: logger)

                    let batch = Task {
                        try await store.handle([
                            command(#"{"externalId":"\#(first)"}"#, key: merchant.secretKey),
                            command(#"{"externalId":"\#(second)"}"#, key: merchant.secretKey),
                        ], now: now)
                    }
                    // The batch holds `first` and waits at the gate, before it asks for `second`.
                    try await Self.waitForLockWaits(observer, logger, gate: gate, advisory: 1, transaction: 0, what: "the batch to wait at the gate")
                    // `other` asks for `first` and waits for the batch, in the background.
                    async let otherInsert = other.query("""
                        INSERT INTO customers (id, merchant_id, external_id, created_at, updated_at)
                        VALUES ('other-first', \(merchant.id), \(first), 0, 0)
                        """, logger: logger)
                    try await Self.waitForLockWaits(observer, logger, gate: gate, advisory: 1, transaction: 1, what: "the other transaction to wait for the batch")
                    // Now the batch asks for `second`: the cycle is complete and its check finds it.
                    try await observer.query("SELECT pg_advisory_unlock(\(gate))", logger: logger)
                    _ = try await otherInsert
                    try await other.query("COMMIT", logger: logger)

                    do {
                        _ = try await batch.value
                        Issue.record("the deadlock's victim answered")
                    } catch {
                        #expect(store.classify(error).kind == .conflict, "\(error)")
                    }
                    let replies = try await store.handle([
                        command(#"{"externalId":"\#(first)"}"#, key: merchant.secretKey),
                        command(#"{"externalId":"\#(second)"}"#, key: merchant.secretKey),
                    ], now: now)
                    #expect(replies.map(\.errorCode) == ["external_id_conflict", "external_id_conflict"])
                    #expect(try replies.map { try decodeFailed($0).error.existingCustomerId } == ["other-first", "other-second"])
                    #expect(try await store.customerCount() == 2)
                }
            }
        }
    }

    /// Waits until `advisory` sessions wait for the `gate` advisory lock and `transaction` sessions
    /// for another transaction (a row being inserted), as pg_stat_activity/pg_locks show it. Only
    /// this test's database counts: tests beside it share the server, and their replicas wait on
    /// the migrations' advisory lock.
    private static func waitForLockWaits(_ observer: PostgresConnection, _ logger: Logger, gate: Int64, advisory: Int,
                                         transaction: Int, what: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            let rows = try await observer.query("""
                SELECT count(*) FILTER (WHERE locktype = 'advisory' AND classid = \(unescaped: String(gate >> 32))
                                          AND objid = \(unescaped: String(gate & 0xFFFF_FFFF))),
                       count(*) FILTER (WHERE locktype = 'transactionid')
                FROM pg_locks WHERE NOT granted
                  AND pid IN (SELECT pid FROM pg_stat_activity WHERE datname = current_database())
                """, logger: logger)
            var counts = (0, 0)
            for try await (advisoryCount, transactionCount) in rows.decode((Int, Int).self) { counts = (advisoryCount, transactionCount) }
            if counts.0 >= advisory && counts.1 >= transaction { return }
            guard ContinuousClock.now < deadline else {
                throw WaitTimedOut(description: "waited 60 s for \(what); lock waits (advisory, transaction): \(counts)")
            }
            try await Task.sleep(for: .milliseconds(20))
        }
    }

    struct WaitTimedOut: Error, CustomStringConvertible { let description: String }

    /// Three processes (stores of their own) migrating a fresh database at once.
    @Test(arguments: StoreKind.all)
    func processesMigrateTheSameDatabaseAtOnce(_ kind: StoreKind) async throws {
        try await withStore(kind) { _, database in
            let fresh = kind == .sqlite
                ? TestDatabase(kind: kind, location: database.location + "-fresh.sqlite")
                : TestDatabase(kind: kind, location: try await TestPostgres.createDatabase())
            try await withThrowingTaskGroup(of: Void.self) { group in
                for _ in 0..<3 {
                    group.addTask { try await fresh.withStore(migrate: true) { _ in } }
                }
                try await group.waitForAll()
            }
            try await fresh.withStore { try await $0.checkWritable() }
        }
    }

    /// Two stores on one database stand for two worker processes (or two hosts): each has its own
    /// connections and locks, so only the database's locking, the unique constraints and the
    /// idempotency records keep them apart.
    @Test(arguments: StoreKind.all)
    func twoStoresWritingConcurrentlyCreateNoDuplicates(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, database in
            let merchant = try await Merchant(store)
            let commands = (0..<300).map {
                command(#"{"externalId":"race-\#($0)","name":"N\#($0)"}"#, key: merchant.secretKey)
            }
            let batches = stride(from: 0, to: commands.count, by: 25).map { Array(commands[$0..<min($0 + 25, commands.count)]) }
            let (first, second) = try await database.withStore { other in
                async let fromFirst = Self.handleAll(batches, with: store)
                async let fromSecond = Self.handleAll(batches.reversed(), with: other)
                return try await (fromFirst, fromSecond)
            }

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

    /// The same keys in the same batches at the same moment from two stores: every insert of one
    /// side races an uncommitted insert of the other. Exactly one customer per key; the loser
    /// replays the winner's bytes (or is a conflict when its payload differs).
    @Test(arguments: StoreKind.all)
    func racingTheSameKeysReplaysTheWinnersBytes(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, database in
            let merchant = try await Merchant(store)
            let same = (0..<100).map { command(#"{"externalId":"same-\#($0)","name":"N\#($0)"}"#, key: merchant.secretKey) }
            let different = (0..<100).map { command(#"{"externalId":"same-\#($0)","name":"Other \#($0)"}"#, key: merchant.secretKey) }
            let (first, second, third) = try await database.withStore { other in
                try await database.withStore { another in
                    async let a = store.handle(same, now: now)
                    async let b = other.handle(same.reversed(), now: now)
                    async let c = another.handle(different, now: now)
                    return try await (a, b, Array(c))
                }
            }
            #expect(try await store.customerCount() == 100)
            let secondInOrder = Array(second.reversed())
            var created = 0
            for index in 0..<100 {
                let sides = [(first[index], "N\(index)"), (secondInOrder[index], "N\(index)"), (third[index], "Other \(index)")]
                let winners = sides.indices.filter { !sides[$0].0.replayed && sides[$0].0.type == .customerCreated }
                created += winners.count
                let winner = try #require(winners.first)
                let (winningReply, winningName) = sides[winner]
                let winningCustomer = try decodeCreated(winningReply).customer
                #expect(winningCustomer.attributes.name == winningName)
                for side in sides.indices where side != winner {
                    let (reply, name) = sides[side]
                    if name == winningName {
                        #expect(reply.replayed && reply.body == winningReply.body && reply.messageID == winningReply.messageID)
                    } else {
                        #expect(reply.errorCode == "external_id_conflict")
                        #expect(try decodeFailed(reply).error.existingCustomerId == winningCustomer.id)
                    }
                }
            }
            #expect(created == 100)
        }
    }

    private static func handleAll(_ batches: [[IncomingCommand]], with store: any CustomerStorage) async throws -> [ReplyRecord] {
        var replies: [ReplyRecord] = []
        for batch in batches {
            replies += try await store.handle(batch, now: now)
        }
        return replies
    }
}
