import ArgumentParser
import CustomerWorker
import Foundation
import Logging
import Observability

/// The worker's settings as flags. Each flag overrides its environment variable; both are
/// described by one row of `WorkerConfiguration.settings`.
struct WorkerOptions: ParsableArguments {
    @Option(help: help("AMQP_URL")) var amqpURL: String?
    @Option(help: help("DATABASE_URL")) var database: String?
    @Option(help: help("DATABASE_PATH")) var databasePath: String?
    @Option(help: help("PREFETCH")) var prefetch: String?
    @Option(help: help("BATCH_LINGER_MS")) var batchLingerMs: String?
    @Option(help: help("SHUTDOWN_TIMEOUT")) var shutdownTimeout: String?
    @Option(help: help("DATABASE_BUSY_TIMEOUT_MS")) var databaseBusyTimeoutMs: String?
    @Option(help: help("DATABASE_SYNCHRONOUS")) var databaseSynchronous: String?
    @Option(help: help("CONFIRM_TIMEOUT")) var confirmTimeout: String?
    @Option(help: help("PUBLISH_FAILURE_TIMEOUT")) var publishFailureTimeout: String?
    @Option(help: help("TRANSIENT_ATTEMPTS")) var transientAttempts: String?
    @Option(help: help("DELIVERY_LIMIT")) var deliveryLimit: String?
    @Option(help: help("REPLIES_MAX_LENGTH")) var repliesMaxLength: String?
    @Option(help: help("REPLY_TO_PATTERN")) var replyToPattern: String?
    @Option(help: help("REPLY_TO_SERVER_NAMED")) var replyToServerNamed: String?
    @Option(help: help("HTTP_PORT")) var httpPort: String?
    @Option(help: help("LOG_LEVEL")) var logLevel: String?
    @Option(help: help("LOG_FORMAT")) var logFormat: String?
    @Option(help: help("COMMAND_EXCHANGE")) var commandExchange: String?
    @Option(help: help("COMMAND_ROUTING_KEY")) var commandRoutingKey: String?
    @Option(help: help("COMMAND_QUEUE")) var commandQueue: String?
    @Option(help: help("DEAD_LETTER_EXCHANGE")) var deadLetterExchange: String?
    @Option(help: help("DEAD_LETTER_QUEUE")) var deadLetterQueue: String?
    @Option(help: help("EVENTS_EXCHANGE")) var eventsExchange: String?
    @Option(help: help("REPLIES_QUEUE")) var repliesQueue: String?
    @Option(help: help("REPLIES_BINDING_KEY")) var repliesBindingKey: String?

    private static func help(_ variable: String) -> ArgumentHelp {
        guard let setting = WorkerConfiguration.settings.first(where: { $0.variable == variable }) else {
            return ArgumentHelp("(env \(variable))")
        }
        return ArgumentHelp("\(setting.meaning) (env \(variable); default \(setting.defaultValue))", valueName: "value")
    }

    /// The configuration, with logging set up as it says.
    func bootstrap(label: String) throws -> (WorkerConfiguration, Logger) {
        let configuration = try configuration()
        bootstrapLogging(level: configuration.logLevel, format: configuration.logFormat)
        var logger = Logger(label: label)
        logger.logLevel = configuration.logLevel
        return (configuration, logger)
    }

    /// Flags first, then the environment, then the defaults.
    func configuration(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> WorkerConfiguration {
        let flags: [String: String?] = [
            "AMQP_URL": amqpURL, "DATABASE_URL": database, "DATABASE_PATH": databasePath, "PREFETCH": prefetch, "BATCH_LINGER_MS": batchLingerMs,
            "SHUTDOWN_TIMEOUT": shutdownTimeout, "DATABASE_BUSY_TIMEOUT_MS": databaseBusyTimeoutMs,
            "DATABASE_SYNCHRONOUS": databaseSynchronous,
            "CONFIRM_TIMEOUT": confirmTimeout, "PUBLISH_FAILURE_TIMEOUT": publishFailureTimeout, "TRANSIENT_ATTEMPTS": transientAttempts, "DELIVERY_LIMIT": deliveryLimit,
            "REPLIES_MAX_LENGTH": repliesMaxLength, "REPLY_TO_PATTERN": replyToPattern, "REPLY_TO_SERVER_NAMED": replyToServerNamed, "HTTP_PORT": httpPort, "LOG_LEVEL": logLevel, "LOG_FORMAT": logFormat, "COMMAND_EXCHANGE": commandExchange,
            "COMMAND_ROUTING_KEY": commandRoutingKey, "COMMAND_QUEUE": commandQueue,
            "DEAD_LETTER_EXCHANGE": deadLetterExchange, "DEAD_LETTER_QUEUE": deadLetterQueue,
            "EVENTS_EXCHANGE": eventsExchange, "REPLIES_QUEUE": repliesQueue, "REPLIES_BINDING_KEY": repliesBindingKey,
        ]
        do {
            return try WorkerConfiguration { variable in (flags[variable] ?? nil) ?? environment[variable] }
        } catch {
            throw ValidationError(error.description)
        }
    }
}
