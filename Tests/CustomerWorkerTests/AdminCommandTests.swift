import DatabaseURL
import BrokerTestSupport
import CreateCustomer
import CustomerDomain
import CustomerWorker
import WorkerComposition
import Foundation
import Testing

/// The admin commands as a user runs them: real processes on a real SQLite file or PostgreSQL database.
@Suite("Admin commands", .closesResources)
struct AdminCommandTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestBroker.uniqueName("admin"))
    var sqlitePath: String { directory.appendingPathComponent("db/customers.sqlite").path }

    /// The `DATABASE_URL` of a fresh database of `kind`.
    private func databaseURL(_ kind: StoreKind) async throws -> String {
        kind == .sqlite ? sqlitePath : try await TestPostgres.createDatabase()
    }

    private static func run(_ arguments: [String], database: String) async throws -> (status: Int32, output: String) {
        try await TestBroker.runCapturing(WorkerProcess.executable, arguments, environment: ["DATABASE_URL": database])
    }

    private func cleanUp(_ database: String) async {
        await TestPostgres.dropDatabase(database)
        try? FileManager.default.removeItem(at: directory)
    }

    @Test(arguments: StoreKind.all)
    func merchantsKeysAndPlans(_ kind: StoreKind) async throws {
        let database = try await databaseURL(kind)
        let run = { (arguments: [String]) in try await Self.run(arguments, database: database) }
        #expect(try await run(["migrate"]).status == 0)
        let created = try await run(["merchants", "create", "--name", "Acme"])
        #expect(created.status == 0)
        let merchant = try #require(try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: String])
        let merchantID = try #require(merchant["merchantId"])
        #expect(merchant["secretKey"]?.hasPrefix("sk_") == true)
        #expect(merchant["publishableKey"]?.hasPrefix("pk_") == true)
        // 128 bits at least: the secret part alone is 64 hex digits.
        #expect((merchant["secretKey"]?.split(separator: "_").last?.count ?? 0) >= 32)

        let key = try await run(["keys", "create", "--merchant", merchantID, "--type", "publishable"])
        #expect(key.status == 0 && key.output.hasPrefix("pk_"))
        let keyPrefix = key.output.split(separator: "_").prefix(2).joined(separator: "_")
        #expect(try await run(["keys", "revoke", keyPrefix]).status == 0)
        #expect(try await run(["keys", "revoke", "sk_doesnotexist"]).status != 0)

        let catalog = TestBroker.repositoryRoot.appendingPathComponent("schemas/examples/plan-catalog.example.json").path
        let imported = try await run(["plans", "import", "--merchant", merchantID, catalog])
        #expect(imported.status == 0 && imported.output.contains("imported 7 plan(s)"))
        #expect(try await run(["plans", "import", "--merchant", "no-such-merchant", catalog]).status != 0)
        await cleanUp(database)
    }

    /// Imports `catalog` (JSON) for a new merchant into a SQLite database; the file's path and the
    /// command's result.
    private func importCatalog(_ catalog: String, name: String) async throws -> (file: String, status: Int32, output: String) {
        let database = sqlitePath
        let run = { (arguments: [String]) in try await Self.run(arguments, database: database) }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let created = try await run(["merchants", "create", "--name", "Acme"])
        let merchant = try #require(try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: String])
        let file = directory.appendingPathComponent(name).path
        try catalog.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await run(["plans", "import", "--merchant", try #require(merchant["merchantId"]), file])
        return (file, result.status, result.output)
    }

    @Test func aBrokenCatalogNamesTheFileTheFieldAndTheRule() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let broken = #"{"plans":[{"id":"a","name":"A","currency":"EUR","price":-1,"billingCadence":"weekly","trialDays":0,"isPrivate":false,"status":"available","default":true}]}"#
        let result = try await importCatalog(broken, name: "broken.json")
        #expect(result.status == 1)
        #expect(result.output.contains("\(result.file): plans[0].price"))
        #expect(result.output.contains("\(result.file): plans[0].currency"))
        #expect(result.output.contains("\(result.file): plans[0].billingCadence"))
    }

    @Test func aHugeTrialIsRefusedAtImport() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let catalog = #"{"plans":[{"id":"pro","name":"Pro","currency":"USD","price":900,"billingCadence":"monthly","trialDays":99999999999999,"isPrivate":false,"status":"available","default":true}]}"#
        let result = try await importCatalog(catalog, name: "huge-trial.json")
        #expect(result.status == 1)
        #expect(result.output.contains("\(result.file): plans[0].trialDays: must be a whole number of days in 0...730"))
    }

    /// An existing SQLite database moved into PostgreSQL: everything arrives, keys still
    /// authenticate, replays keep their bytes, and copying again changes nothing.
    @Test(.enabled(if: TestPostgres.enabled, "no PostgreSQL: run scripts/postgres.sh start and export POSTGRES_TEST_URL"))
    func copyDatabaseMovesASQLiteDatabaseIntoPostgreSQL() async throws {
        let destination = try await TestPostgres.createDatabase()
        let source = sqlitePath
        let logger = TestBroker.logger("copy")
        let commands = (0..<30).map {
            IncomingCommand(apiKey: nil, contentType: "application/json", body: Array(#"{"externalId":"copy-\#($0)","name":"N\#($0)"}"#.utf8))
        }
        let (merchant, original) = try await OpenedStore.with(try DatabaseLocation(source), logger: logger, migrate: true) { store in
            let merchant = try await store.createMerchant(name: "Copied")
            try await store.importPlans(merchantID: merchant.merchantId, catalog: try PlanCatalog.parse(Array(WorkerFixture.freeDefaultCatalog.utf8)).get())
            try await store.revokeAPIKey(merchant.publishableKey)
            let keyed = commands.map { IncomingCommand(apiKey: merchant.secretKey, contentType: $0.contentType, body: $0.body) }
            return (merchant, try await store.handle(keyed, now: Date()))
        }
        #expect(original.allSatisfy { $0.type == .customerCreated })

        let copied = try await Self.run(["copy-database", "--from", source, "--to", destination], database: source)
        #expect(copied.status == 0, "\(copied.output)")
        // 1 merchant, 2 keys, 1 plan, 30 customers, 30 subscriptions, 30 processed records.
        #expect(copied.output.contains("94 of 94 rows inserted"), "\(copied.output)")

        try await OpenedStore.with(try DatabaseLocation(destination), logger: logger, migrate: true) { store in
            #expect(try await store.customerCount() == 30)
            #expect(try await store.authenticate(apiKey: merchant.secretKey) == .merchant(id: merchant.merchantId))
            #expect(try await store.authenticate(apiKey: merchant.publishableKey) == .unauthorized(.revoked))
            #expect(try await store.plans(merchantID: merchant.merchantId).map(\.plan.id) == ["free"])
            let keyed = commands.map { IncomingCommand(apiKey: merchant.secretKey, contentType: $0.contentType, body: $0.body) }
            let replays = try await store.handle(keyed, now: Date())
            #expect(replays.allSatisfy { $0.replayed })
            #expect(replays.map(\.body) == original.map(\.body))
            #expect(replays.map(\.messageID) == original.map(\.messageID))
        }
        let again = try await Self.run(["copy-database", "--from", source, "--to", destination], database: source)
        #expect(again.status == 0 && again.output.contains("0 of 94 rows inserted"), "\(again.output)")
        await cleanUp(destination)
    }
}
