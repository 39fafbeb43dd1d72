import DatabaseURL
import CreateCustomer
import CustomerDomain
import CustomerWorker
import WorkerComposition
import Foundation
import Logging

/// The worker's database for one run: migrated, one merchant whose default plan is free (so every
/// customer also gets a subscription, the worker's full job), and optionally many customers. A
/// fresh SQLite file by default, or the PostgreSQL (or SQLite) database `--database` names: a new
/// merchant keeps the run's customers apart from whatever is already there.
struct BenchDatabase: Sendable {
    static let catalog = """
        {"plans":[{"id":"free","name":"Free","description":"The benchmark's default plan","currency":"USD","price":0,
        "billingCadence":"monthly","trialDays":0,"isPrivate":false,"status":"available","default":true}]}
        """
    /// Customers per transaction while preloading.
    private static let preloadBatch = 10_000

    let store: any CustomerStorage
    /// `DATABASE_URL` for the worker processes.
    let url: String
    let location: DatabaseLocation
    /// The merchant's secret key, sent in each command's `x-api-key` header.
    let apiKey: String
    /// Runs the store's services (PostgreSQL's connection pool) until `close()`.
    private let services: Task<Void, Never>

    static func create(url: String, logger: Logger) async throws -> BenchDatabase {
        let location = try DatabaseLocation(url)
        let opened = try OpenedStore.open(location, busyTimeout: .seconds(5), logger: logger)
        let services = Task {
            await withTaskGroup(of: Void.self) { group in
                for service in opened.services { group.addTask { try? await service.run() } }
            }
        }
        do {
            let store = opened.storage
            try await store.migrate()
            let apiKey = try await newMerchant(name: "Benchmark merchant", store: store)
            return BenchDatabase(store: store, url: url, location: location, apiKey: apiKey, services: services)
        } catch {
            services.cancel()
            await services.value
            throw error
        }
    }

    /// A new merchant with the benchmark's catalog; returns its secret key.
    func newMerchant(name: String) async throws -> String {
        try await Self.newMerchant(name: name, store: store)
    }

    private static func newMerchant(name: String, store: any CustomerStorage) async throws -> String {
        let credentials = try await store.createMerchant(name: name)
        let catalog = try PlanCatalog.parse(Array(Self.catalog.utf8)).get()
        _ = try await store.importPlans(merchantID: credentials.merchantId, catalog: catalog)
        return credentials.secretKey
    }

    func close() async {
        services.cancel()
        await services.value
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

    /// CPU seconds (user + system) of every PostgreSQL server process on this machine, when the
    /// database is PostgreSQL (nil for SQLite, whose work is inside the workers' own CPU time).
    /// The server must run here for the figure to mean anything.
    func serverCPUSeconds() -> Double? {
        guard case .postgres = location else { return nil }
        let processes = (try? FileManager.default.contentsOfDirectory(atPath: "/proc")) ?? []
        var total = 0.0
        for pid in processes.compactMap(Int32.init) {
            guard let name = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8),
                  name.trimmingCharacters(in: .whitespacesAndNewlines) == "postgres" else { continue }
            total += ProcessUsage(pid: pid).cpuSeconds ?? 0
        }
        return total
    }
}
