import AMQP
import BrokerTestSupport
import CreateCustomer
import CustomerDomain
import CustomerWorker
import WorkerComposition
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// A worker environment of its own: a fresh database (a SQLite file, or a PostgreSQL database of
/// its own), topology names no other test uses, and a client that publishes commands and receives
/// their replies through direct reply-to.
final class WorkerFixture: Sendable {
    let directory: URL
    let configuration: WorkerConfiguration
    let kind: StoreKind
    /// The test's own handle on the database (the worker opens its own).
    let store: any CustomerStorage
    /// Runs the store's services (PostgreSQL's connection pool) until `tearDown`.
    private let storeServices: Task<Void, Never>
    let client: CommandClient
    private let tornDown = Mutex(false)

    /// Settings a test may change from the defaults.
    struct Tuning {
        var prefetch = 256
        var busyTimeout: Duration = .seconds(5)
        var transientAttempts = 5
        var transientBackoff = RecoveryPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(1))
        var deliveryLimit = 5
        /// Fair share as a worker runs by default (every test passes with it on).
        var fairShareShards = WorkerConfiguration().fairShareShards
        /// Another broker than the tests' own (e.g. a node a test restarts).
        var amqpURL: String?
        /// Another database than a fresh one of the store kind's (e.g. on a server or a
        /// filesystem a test takes down); the test removes it.
        var databaseURL: String?
    }

    /// The worker's database URL, with short connection and answer timeouts on PostgreSQL (2 s and
    /// 10 s, against 10 s and 60 s by default); SQLite's path as it is. A statement whose backend
    /// the server ended can leave postgres-nio waiting on the half-closed socket until
    /// `answer_timeout`, so a test that ends the worker's connections and waits for the worker to
    /// notice uses this, and waits longer than these.
    var quickToGiveUpDatabaseURL: String {
        let url = configuration.databaseURL
        guard kind == .postgres else { return url }
        return url + (url.contains("?") ? "&" : "?") + "connect_timeout=2&answer_timeout=10"
    }

    init(_ name: String, tuning: Tuning = Tuning(), store kind: StoreKind = .sqlite) async throws {
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("worker-\(TestBroker.uniqueName(name))")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        var configuration = WorkerConfiguration()
        configuration.amqpURL = tuning.amqpURL ?? TestBroker.url
        switch (kind, tuning.databaseURL) {
        case (_, let url?): configuration.databaseURL = url
        case (.sqlite, nil): configuration.databaseURL = directory.appendingPathComponent("customers.sqlite").path
        case (.postgres, nil): configuration.databaseURL = try await TestPostgres.createDatabase()
        }
        self.kind = kind
        configuration.prefetch = tuning.prefetch
        configuration.databaseBusyTimeout = tuning.busyTimeout
        configuration.transientAttempts = tuning.transientAttempts
        configuration.transientBackoff = tuning.transientBackoff
        configuration.deliveryLimit = tuning.deliveryLimit
        configuration.fairShareShards = tuning.fairShareShards
        configuration.shutdownTimeout = .seconds(10)
        configuration.reconnect = TestBroker.quickRecovery
        let prefix = TestBroker.uniqueName("test.\(name)")
        configuration.names = TopologyNames(prefix: prefix)
        configuration.logLevel = .warning
        self.configuration = configuration
        let opened = try OpenedStore.open(try configuration.databaseLocation, busyTimeout: tuning.busyTimeout,
                                          logger: TestBroker.logger("store"))
        // Runs until `tearDown` cancels it, or the test's `TestResources` scope does if this
        // initialiser throws past this point.
        let services = Task {
            await withTaskGroup(of: Void.self) { group in
                for service in opened.services { group.addTask { try? await service.run() } }
            }
        }
        TestResources.onExit("store services of \(prefix)") { services.cancel(); await services.value }
        storeServices = services
        try await opened.storage.migrate()
        store = opened.storage
        client = try await CommandClient(configuration: configuration, logger: TestBroker.logger("client"), name: "\(prefix).client")
        TestResources.onExit("worker fixture \(prefix)") { [self] in await tearDown() }
    }

    /// A merchant whose catalog is `catalog` (JSON), returning its credentials.
    func merchant(catalog: String? = WorkerFixture.freeDefaultCatalog) async throws -> MerchantCredentials {
        let credentials = try await store.createMerchant(name: "Test merchant")
        if let catalog {
            let parsed = try PlanCatalog.parse(Array(catalog.utf8)).get()
            try await store.importPlans(merchantID: credentials.merchantId, catalog: parsed)
        }
        return credentials
    }

    static let freeDefaultCatalog = """
        {"plans":[{"id":"free","name":"Free","currency":"USD","price":0,"billingCadence":"monthly","trialDays":0,
        "isPrivate":false,"status":"available","default":true}]}
        """

    /// Environment for a `customer-worker run` process on this fixture.
    var environment: [String: String] { configuration.environmentVariables }

    /// Runs the worker in this process (exactly what `customer-worker run` builds) while `body` runs.
    func withWorker<T: Sendable>(_ body: @Sendable () async throws -> T) async throws -> T {
        let application = try WorkerApplication(configuration: configuration, logger: TestBroker.logger("worker"))
        return try await withThrowingTaskGroup(of: T?.self) { tasks in
            tasks.addTask {
                try await application.run()
                return nil
            }
            let result = try await body()
            await application.triggerGracefulShutdown()
            try await tasks.waitForAll()
            return result
        }
    }

    /// Publishes and waits for one reply per command.
    func send(_ commands: [CommandClient.Command], apiKey: String?, timeout: Duration = .seconds(30)) async throws -> [Delivery] {
        try await client.publish(commands, apiKey: apiKey, wantReplies: true)
        let replies = try await client.replies(count: commands.count, timeout: timeout)
        Conformance.record(replies)
        return replies
    }

    func send(json: String, apiKey: String?, messageID: String = UUID().uuidString, correlationID: String? = nil,
              contentType: String? = "application/json") async throws -> Delivery {
        let command = CommandClient.Command(body: Array(json.utf8), messageID: messageID, correlationID: correlationID, contentType: contentType)
        let replies = try await send([command], apiKey: apiKey)
        guard let reply = replies.first else { throw FixtureError.noReply }
        return reply
    }

    enum FixtureError: Error { case noReply }

    /// Deletes the fixture's queues, exchanges and files; once (the test may call it, and its
    /// `TestResources` scope calls it again when the test ends).
    func tearDown() async {
        guard tornDown.withLock({ done in defer { done = true }; return !done }) else { return }
        let session = AMQPSession(configuration: (try? TestBroker.configuration(name: "teardown")) ?? .init(),
                                  logger: TestBroker.logger("teardown"))
        await configuration.deleteTopology(session)
        await session.close()
        await client.close()
        storeServices.cancel()
        await storeServices.value
        if kind == .postgres { await TestPostgres.dropDatabase(configuration.databaseURL) }
        try? FileManager.default.removeItem(at: directory)
    }
}

/// The JSON object of a reply body.
func json(_ delivery: Delivery) throws -> [String: Any] {
    guard let object = try JSONSerialization.jsonObject(with: Data(delivery.body)) as? [String: Any] else {
        throw WorkerFixture.FixtureError.noReply
    }
    return object
}

/// Writes every reply the tests receive to CONFORMANCE_OUTPUT_DIR, which scripts/test.sh
/// validates against schemas/ afterwards.
enum Conformance {
    static func record(_ replies: [Delivery]) {
        guard let directory = ProcessInfo.processInfo.environment["CONFORMANCE_OUTPUT_DIR"] else { return }
        for reply in replies {
            let path = "\(directory)/reply.worker-\(UUID().uuidString).json"
            _ = FileManager.default.createFile(atPath: path, contents: Data(reply.body))
        }
    }
}

extension WorkerConfiguration {
    /// Deletes every queue and exchange the topology declares (the shards of fair share too).
    func deleteTopology(_ session: AMQPSession) async {
        for queue in topology.queues { try? await session.deleteQueue(queue.name) }
        for exchange in topology.exchanges { try? await session.deleteExchange(exchange.name) }
    }
}

extension AMQPSession {
    /// Consumes every queue the worker consumes (under fair share: the shards and the command queue).
    func consumeCommandQueues(of configuration: WorkerConfiguration) async throws {
        for queue in configuration.commandQueues { try await consume(queue: queue) }
    }
}
