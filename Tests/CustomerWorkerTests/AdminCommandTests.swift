import BrokerTestSupport
import Foundation
import Testing

/// The admin commands as a user runs them: real processes on a real SQLite file.
@Suite("Admin commands")
struct AdminCommandTests {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent(TestBroker.uniqueName("admin"))
    var environment: [String: String] { ["DATABASE_PATH": directory.appendingPathComponent("db/customers.sqlite").path] }

    private func run(_ arguments: String...) async throws -> (status: Int32, output: String) {
        try await TestBroker.runCapturing(WorkerProcess.executable, arguments, environment: environment)
    }

    @Test func merchantsKeysAndPlans() async throws {
        defer { try? FileManager.default.removeItem(at: directory) }
        let created = try await run("merchants", "create", "--name", "Acme")
        #expect(created.status == 0)
        let merchant = try #require(try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: String])
        let merchantID = try #require(merchant["merchantId"])
        #expect(merchant["secretKey"]?.hasPrefix("sk_") == true)
        #expect(merchant["publishableKey"]?.hasPrefix("pk_") == true)
        // 128 bits at least: the secret part alone is 64 hex digits.
        #expect((merchant["secretKey"]?.split(separator: "_").last?.count ?? 0) >= 32)

        let key = try await run("keys", "create", "--merchant", merchantID, "--type", "publishable")
        #expect(key.status == 0 && key.output.hasPrefix("pk_"))
        let keyPrefix = key.output.split(separator: "_").prefix(2).joined(separator: "_")
        #expect(try await run("keys", "revoke", keyPrefix).status == 0)
        #expect(try await run("keys", "revoke", "sk_doesnotexist").status != 0)

        let catalog = TestBroker.repositoryRoot.appendingPathComponent("schemas/examples/plan-catalog.example.json").path
        let imported = try await run("plans", "import", "--merchant", merchantID, catalog)
        #expect(imported.status == 0 && imported.output.contains("imported 7 plan(s)"))
        #expect(try await run("plans", "import", "--merchant", "no-such-merchant", catalog).status != 0)
    }

    /// Imports `catalog` (JSON) for a new merchant; the file's path and the command's result.
    private func importCatalog(_ catalog: String, name: String) async throws -> (file: String, status: Int32, output: String) {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let created = try await run("merchants", "create", "--name", "Acme")
        let merchant = try #require(try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: String])
        let file = directory.appendingPathComponent(name).path
        try catalog.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await run("plans", "import", "--merchant", try #require(merchant["merchantId"]), file)
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
}
