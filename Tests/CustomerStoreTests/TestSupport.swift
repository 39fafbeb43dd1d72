import CustomerDomain
@testable import CustomerStore
import Foundation
import Synchronization
import Testing

/// A migrated store on a real SQLite file in its own temporary folder, removed afterwards.
@discardableResult
func withStore<T>(
    _ test: String = #function, _ body: (CustomerStore, String) async throws -> T
) async throws -> T {
    let folder = FileManager.default.temporaryDirectory.appendingPathComponent("customer-store-\(UUID().uuidString)")
    defer { try? FileManager.default.removeItem(at: folder) }
    // A nested path: the store creates missing folders.
    let path = folder.appendingPathComponent("nested/customers.sqlite").path
    let store = try CustomerStore(path: path)
    try store.migrate()
    return try await body(store, path)
}

let now = Date(timeIntervalSince1970: 1_747_728_000.125)

func command(_ json: String, key: String?, contentType: String? = "application/json") -> IncomingCommand {
    IncomingCommand(apiKey: key, contentType: contentType, body: Array(json.utf8))
}

extension CustomerStore {
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

    init(_ store: CustomerStore, name: String = "Acme") async throws {
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
