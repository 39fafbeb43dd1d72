import AMQP
import CreateCustomer
import CustomerWorker
import Foundation
import Logging
import Observability
import ServiceLifecycle
import WorkerTracing

/// The running application, built by one function so tests run exactly what
/// `customer-worker run` runs: the worker and, when `HTTP_PORT` is set, the HTTP listener for
/// /healthz, /readyz and /metrics, and, when an OTLP endpoint is configured, the span exporter,
/// under one ServiceGroup that shuts down gracefully on SIGTERM/SIGINT within the configured timeout.
public struct WorkerApplication: Sendable {
    public let worker: CommandWorker
    public let httpListener: HTTPListener?
    public let metrics: MetricsRegistry
    private let group: ServiceGroup

    /// Opens the database (`DATABASE_URL`: SQLite or PostgreSQL) and assembles the services;
    /// connects nothing yet. The worker migrates the database before it takes a command.
    /// `decorateStore` wraps the store the worker uses (a test's fault injection).
    public init(configuration: WorkerConfiguration, logger: Logger,
                environment: [String: String] = ProcessInfo.processInfo.environment,
                decorateStore: @Sendable (any CustomerStorage) -> any CustomerStorage = { $0 }) throws {
        // Before any metric is created: metrics made earlier would go nowhere.
        metrics = MetricsRegistry.bootstrap()
        let environment = configuration.tracingEnvironment(environment)
        let tracing = try TracingBackend.bootstrap(serviceName: configuration.tracing.serviceName, logger: logger, environment: environment)
        if tracing != nil {
            logger.info("tracing on: spans exported over OTLP/HTTP", metadata: [
                "otlp.endpoint": "\(Redaction.redactingCredentials(in: TracingBackend.endpointVariables.lazy.compactMap { environment[$0] }.first ?? ""))",
            ])
        }
        let store = try OpenedStore.open(try configuration.databaseLocation, busyTimeout: configuration.databaseBusyTimeout,
                                         logger: logger, backgroundCheckpoints: true, synchronous: configuration.databaseSynchronous)
        let storage = decorateStore(store.storage)
        let worker = try CommandWorker(configuration: configuration, store: storage, logger: logger, tracing: tracing != nil)
        self.worker = worker
        // The exporter first, so it shuts down last and flushes every span the others ended; then
        // the store's services, so they shut down after the worker has finished its batches.
        var services: [ServiceGroupConfiguration.ServiceConfiguration] = tracing.map { [.init(service: $0)] } ?? []
        services += store.services.map { .init(service: $0) }
        if let port = configuration.httpPort {
            let registry = metrics
            let listener = try HTTPListener(
                port: UInt16(port), logger: logger,
                readiness: { worker.isReady },
                readinessDetail: { worker.readinessDetail },
                health: { worker.isLive },
                metrics: { registry.render() })
            // Before the worker, so it is shut down after it: /healthz answers while the worker drains.
            services.append(.init(service: listener))
            httpListener = listener
        } else {
            httpListener = nil
        }
        services.append(.init(service: MigratingWorker(storage: storage, worker: worker),
                              successTerminationBehavior: .gracefullyShutdownGroup))
        var group = ServiceGroupConfiguration(services: services, gracefulShutdownSignals: [.sigterm, .sigint],
                                              cancellationSignals: [], logger: logger)
        group.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        // Past this, ServiceLifecycle stops the process (fatalError). Cancellation reaches a
        // session's loop between its blocking broker calls (a connect, a login, a declare, each
        // bounded by the node's connect and RPC timeouts), so the bound is the longest such call
        // plus a margin: 2 s, then 10 s, were exceeded by workers run inside the test process
        // while the broker answered slowly, and the crash took the whole test run down.
        let longestBrokerCall = (try? configuration.amqpNodes)?.map { $0.connectTimeout + $0.rpcTimeout }.max()
        group.maximumCancellationDuration = (longestBrokerCall ?? .seconds(40)) + .seconds(10)
        self.group = ServiceGroup(configuration: group)
    }

    public func run() async throws {
        try await group.run()
    }

    public func triggerGracefulShutdown() async {
        await group.triggerGracefulShutdown()
    }

    /// `customer-worker health`: the broker answers and the database takes a write. It changes
    /// nothing else: it does not migrate (a database the worker has not migrated is unhealthy).
    public static func checkHealth(configuration: WorkerConfiguration, logger: Logger) async throws {
        let session = AMQPSession(nodes: try configuration.amqpNodes,
                                  recovery: RecoveryPolicy(maximumAttempts: 1), logger: logger, name: "health")
        try await session.connect()
        await session.close()
        try await OpenedStore.with(try configuration.databaseLocation, busyTimeout: configuration.databaseBusyTimeout,
                                   logger: logger, migrate: false) { try await $0.checkWritable() }
    }
}
