import AMQP
import CustomerStore
import Logging
import ServiceLifecycle

/// Builds the running application, so tests can run exactly what `customer-worker run` runs.
public enum WorkerApplication {
    /// Opens (and migrates) the database and assembles the worker's services under one
    /// ServiceGroup that shuts down gracefully on SIGTERM/SIGINT within the configured timeout.
    public static func makeServiceGroup(configuration: WorkerConfiguration, logger: Logger) throws -> (ServiceGroup, CommandWorker) {
        let store = try CustomerStore(path: configuration.databasePath, busyTimeout: configuration.databaseBusyTimeout)
        try store.migrate()
        let worker = try CommandWorker(configuration: configuration, store: store, logger: logger)
        var group = ServiceGroupConfiguration(
            services: [.init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup)],
            gracefulShutdownSignals: [.sigterm, .sigint],
            cancellationSignals: [],
            logger: logger
        )
        group.maximumGracefulShutdownDuration = configuration.shutdownTimeout
        group.maximumCancellationDuration = .seconds(2)
        return (ServiceGroup(configuration: group), worker)
    }

    /// `customer-worker health`: the broker answers and the database takes a write.
    public static func checkHealth(configuration: WorkerConfiguration, logger: Logger) async throws {
        let session = AMQPSession(configuration: try configuration.amqpConfiguration,
                                  recovery: RecoveryPolicy(maximumAttempts: 1), logger: logger, name: "health")
        try await session.connect()
        await session.close()
        let store = try CustomerStore(path: configuration.databasePath, busyTimeout: configuration.databaseBusyTimeout)
        try store.migrate()
        try await store.checkWritable()
    }
}
