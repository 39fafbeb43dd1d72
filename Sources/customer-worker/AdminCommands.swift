import ArgumentParser
import CustomerDomain
import CustomerStore
import CustomerWorker
import Foundation

/// `--database PATH`, shared by every command that opens the store.
struct DatabaseOptions: ParsableArguments {
    static let defaultPath = WorkerConfiguration().databasePath

    @Option(
        name: .customLong("database"),
        help: ArgumentHelp(
            "The SQLite database file, created with its folder on first use.",
            discussion: "Default: the DATABASE_PATH environment variable, else \(defaultPath).",
            valueName: "path"))
    var explicitPath: String?

    /// ArgumentParser reads no environment, so the fallback to `DATABASE_PATH` happens here.
    var path: String {
        if let explicitPath { return explicitPath }
        if let fromEnvironment = ProcessInfo.processInfo.environment["DATABASE_PATH"], !fromEnvironment.isEmpty {
            return fromEnvironment
        }
        return Self.defaultPath
    }

    /// Opens the store and applies pending migrations, which every admin command needs first.
    func openMigratedStore() throws -> CustomerStore {
        let store = try CustomerStore(path: path)
        try store.migrate()
        return store
    }
}

/// An admin command's failure: ArgumentParser prints it as `Error: …` and exits non-zero.
struct AdminCommandError: Error, CustomStringConvertible {
    var description: String
}

struct Migrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate", abstract: "Create or upgrade the database schema.")

    @OptionGroup var database: DatabaseOptions

    func run() async throws {
        _ = try database.openMigratedStore()
        print("migrated \(database.path)")
    }
}

struct Merchants: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merchants", abstract: "Manage merchants.", subcommands: [Create.self])

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create a merchant with a secret and a publishable API key.",
            discussion: "Prints {\"merchantId\",\"secretKey\",\"publishableKey\"} as one line of JSON. "
                + "The keys are shown only this once: only their hashes are stored.")

        @Option(help: "The merchant's display name.") var name: String
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let credentials = try await database.openMigratedStore().createMerchant(name: name)
            print(String(decoding: credentials.canonicalJSON(), as: UTF8.self))
        }
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keys", abstract: "Manage API keys.", subcommands: [Create.self, Revoke.self])

    enum KeyType: String, ExpressibleByArgument, CaseIterable {
        case secret, publishable

        var storeType: APIKeyType { self == .secret ? .secret : .publishable }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create an API key for a merchant and print it (shown only this once).")

        @Option(name: .customLong("merchant"), help: ArgumentHelp("The merchant id.", valueName: "id")) var merchantID: String
        @Option(help: "secret (sk_…, may create customers) or publishable (pk_…).") var type: KeyType
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            print(try await database.openMigratedStore().createAPIKey(merchantID: merchantID, type: type.storeType))
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key.")

        @Argument(help: ArgumentHelp(
            "The key's id, its sk_<id> or pk_<id> prefix, or the whole key.", valueName: "key-prefix-or-id"))
        var reference: String
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let keyID = try await database.openMigratedStore().revokeAPIKey(reference)
            print("revoked key \(keyID)")
        }
    }
}

struct Plans: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plans", abstract: "Manage merchants' plan catalogs.", subcommands: [Import.self])

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "import",
            abstract: "Replace a merchant's plan catalog with a catalog file.",
            discussion: "The file follows schemas/plan-catalog.schema.json. Plans missing from the file are "
                + "deleted, or archived when subscriptions still reference them.")

        @Option(name: .customLong("merchant"), help: ArgumentHelp("The merchant id.", valueName: "id")) var merchantID: String
        @Argument(help: ArgumentHelp("The catalog file (JSON).", valueName: "file")) var file: String
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let catalog = try loadCatalog()
            let summary = try await database.openMigratedStore().importPlans(merchantID: merchantID, catalog: catalog)
            print("imported \(summary.imported.count) plan(s) for merchant \(merchantID)"
                + Self.listing("archived", summary.archived) + Self.listing("deleted", summary.deleted))
        }

        /// Every broken rule is reported as `FILE: field: rule`.
        private func loadCatalog() throws -> PlanCatalog {
            let bytes: [UInt8]
            do {
                bytes = Array(try Data(contentsOf: URL(fileURLWithPath: file)))
            } catch {
                throw AdminCommandError(description: "\(file): cannot read the file: \(error.localizedDescription)")
            }
            switch PlanCatalog.parse(bytes) {
            case .success(let catalog):
                return catalog
            case .failure(let error):
                throw AdminCommandError(description: error.issues.map { "\(file): \($0)" }.joined(separator: "\n"))
            }
        }

        private static func listing(_ label: String, _ ids: [String]) -> String {
            ids.isEmpty ? "" : "; \(label): " + ids.joined(separator: ", ")
        }
    }
}
