import DatabaseURL
import ArgumentParser
import CustomerDomain
import CreateCustomer
import Logging
import CustomerWorker
import WorkerComposition
import Foundation

/// `--database URL`, shared by every command that opens the store.
struct DatabaseOptions: ParsableArguments {
    static let defaultURL = WorkerConfiguration().databaseURL

    @Option(
        name: .customLong("database"),
        help: ArgumentHelp(
            "The database: a SQLite file (path or sqlite:PATH, created with its folder on first use) or postgres://user:password@host:port/database.",
            discussion: "Default: the DATABASE_URL environment variable, else DATABASE_PATH (deprecated), else \(defaultURL).",
            valueName: "url"))
    var explicitURL: String?

    /// ArgumentParser reads no environment, so the fallback to `DATABASE_URL` happens here.
    var url: String {
        if let explicitURL { return explicitURL }
        let environment = ProcessInfo.processInfo.environment
        for variable in ["DATABASE_URL", "DATABASE_PATH"] {
            if let value = environment[variable], !value.isEmpty { return value }
        }
        return Self.defaultURL
    }

    var location: DatabaseLocation {
        get throws { do { return try DatabaseLocation(url) } catch { throw ValidationError(error.description) } }
    }

    /// Opens the store, applies pending migrations (which every admin command needs first), runs
    /// `body`, and closes the store.
    func withMigratedStore<T: Sendable>(_ body: (any CustomerStorage) async throws -> T) async throws -> T {
        var logger = Logger(label: "admin")
        logger.logLevel = .critical
        return try await OpenedStore.with(try location, logger: logger, migrate: true, body)
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
        try await database.withMigratedStore { _ in }
        print("migrated \(try database.location.redacted)")
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
            let name = self.name
            let credentials = try await database.withMigratedStore { try await $0.createMerchant(name: name) }
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
            let (merchantID, type) = (self.merchantID, self.type.storeType)
            print(try await database.withMigratedStore { try await $0.createAPIKey(merchantID: merchantID, type: type) })
        }
    }

    struct Revoke: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Revoke an API key.")

        @Argument(help: ArgumentHelp(
            "The key's id, its sk_<id> or pk_<id> prefix, or the whole key.", valueName: "key-prefix-or-id"))
        var reference: String
        @OptionGroup var database: DatabaseOptions

        func run() async throws {
            let reference = self.reference
            let keyID = try await database.withMigratedStore { try await $0.revokeAPIKey(reference) }
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
            let merchantID = self.merchantID
            let summary = try await database.withMigratedStore { try await $0.importPlans(merchantID: merchantID, catalog: catalog) }
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

struct CopyDatabase: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "copy-database",
        abstract: "Copy a SQLite database into PostgreSQL (merchants, API keys, plans, customers, subscriptions, processed records).",
        discussion: """
            Stop the workers first. The destination is migrated; rows it already has are kept, so an interrupted \
            copy can be run again. Replays of commands handled before the move keep their bytes. See docs/operations.md.
            """)

    @Option(help: ArgumentHelp("The SQLite database (path or sqlite:PATH).", valueName: "path")) var from: String
    @Option(help: ArgumentHelp("The PostgreSQL database (postgres://user:password@host:port/database).", valueName: "url")) var to: String

    func run() async throws {
        let source: DatabaseLocation
        let destination: DatabaseLocation
        do {
            source = try DatabaseLocation(from)
            destination = try DatabaseLocation(to)
        } catch {
            throw ValidationError(error.description)
        }
        var logger = Logger(label: "copy-database")
        logger.logLevel = .critical
        let summaries = try await DatabaseCopy.copy(from: source, to: destination, logger: logger) { summary in
            print("\(summary.table.rawValue): \(summary.read) read, \(summary.inserted) inserted")
        }
        let read = summaries.reduce(0) { $0 + $1.read }
        let inserted = summaries.reduce(0) { $0 + $1.inserted }
        print("copied \(source.redacted) into \(destination.redacted): \(inserted) of \(read) rows inserted")
    }
}
