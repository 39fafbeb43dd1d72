import CustomerDomain
import CreateCustomer
import CustomerStore
import Foundation

/// The worker's database for one run: migrated, one merchant whose default plan is free (so every
/// customer also gets a subscription, the worker's full job), and optionally many customers.
struct BenchDatabase: Sendable {
    static let catalog = """
        {"plans":[{"id":"free","name":"Free","description":"The benchmark's default plan","currency":"USD","price":0,
        "billingCadence":"monthly","trialDays":0,"isPrivate":false,"status":"available","default":true}]}
        """
    /// Customers per transaction while preloading.
    private static let preloadBatch = 10_000

    let store: CustomerStore
    /// The merchant's secret key, sent in each command's `x-api-key` header.
    let apiKey: String

    static func create(path: String) async throws -> BenchDatabase {
        let store = try CustomerStore(path: path)
        try store.migrateNow()
        let credentials = try await store.createMerchant(name: "Benchmark merchant")
        let catalog = try PlanCatalog.parse(Array(Self.catalog.utf8)).get()
        _ = try await store.importPlans(merchantID: credentials.merchantId, catalog: catalog)
        return BenchDatabase(store: store, apiKey: credentials.secretKey)
    }

    private func handle(_ bodies: [[UInt8]]) async throws -> [ReplyRecord] {
        let commands = bodies.map { IncomingCommand(apiKey: apiKey, contentType: "application/json", body: $0) }
        let replies = try await store.handle(commands, now: Date())
        if let failed = replies.first(where: { $0.type != .customerCreated }) {
            throw BenchmarkError.setupFailed("the store refused a benchmark command: \(String(decoding: failed.body, as: UTF8.self))")
        }
        return replies
    }

    /// The worker's reply to one command of `shape` (created in this database): the ceiling relays
    /// replies of exactly its size and properties.
    func sampleReply(_ shape: CommandShape) async throws -> ReplyRecord {
        try await handle([shape.body(.sample, 0)])[0]
    }

    /// Writes `count` customers through the store's own batch path, many per transaction, the way
    /// the worker writes them but without the broker.
    func preload(_ count: Int, shape: CommandShape) async throws {
        for start in stride(from: 0, to: count, by: Self.preloadBatch) {
            _ = try await handle((start..<min(count, start + Self.preloadBatch)).map { shape.body(.preload, $0) })
        }
    }

    func customerCount() async throws -> Int { try await store.customerCount() }
}
