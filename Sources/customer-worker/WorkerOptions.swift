import ArgumentParser
import CustomerWorker
import Foundation
import Logging
import Observability
import WorkerTracing

/// The worker's settings as flags. Each flag overrides its environment variable. Everything about
/// a setting (variable, flag, default, validation, help) is its row of `WorkerConfiguration.settings`;
/// ArgumentParser still needs one property per flag (it reads its options from the type), named so
/// that its flag is the row's (`amqpURL` → `--amqp-url`). No map ties the two: the values are read
/// back by flag name, and a test checks the executable's flags and help against the table.
///
/// Why not swift-configuration (1.4.0) here: its `CommandLineArgumentsProvider` (trait
/// `CommandLineArguments`) and `EnvironmentVariablesProvider` read values by key, which the table's
/// `init(lookup:)` already does in three lines (flag, then variable, then the property's default);
/// they carry no help text, usage errors or subcommands. ArgumentParser owns those (`--help` per
/// flag, exit 64 on a bad flag, `run`/`publish`/… sharing these options), and it rejects any flag
/// it was not given as a property, so the provider could only see what ArgumentParser let through
/// (`.allUnrecognized`, which would also swallow a mistyped option of a subcommand). Adding the
/// package would thus add a second parser without removing these properties.
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
    @Option(help: help("HAND_BACK_AFTER")) var handBackAfter: String?
    @Option(help: help("DELIVERY_LIMIT")) var deliveryLimit: String?
    @Option(help: help("FAIR_SHARE_SHARDS")) var fairShareShards: String?
    @Option(help: help("REPLIES_MAX_LENGTH")) var repliesMaxLength: String?
    @Option(help: help("REPLY_TO_PATTERN")) var replyToPattern: String?
    @Option(help: help("REPLY_TO_SERVER_NAMED")) var replyToServerNamed: String?
    @Option(help: help("HTTP_PORT")) var httpPort: String?
    @Option(help: help("LOG_LEVEL")) var logLevel: String?
    @Option(help: help("LOG_FORMAT")) var logFormat: String?
    @Option(help: help("OTEL_EXPORTER_OTLP_ENDPOINT")) var otelExporterOtlpEndpoint: String?
    @Option(help: help("OTEL_SERVICE_NAME")) var otelServiceName: String?
    @Option(help: help("OTEL_TRACES_SAMPLER")) var otelTracesSampler: String?
    @Option(help: help("COMMAND_EXCHANGE")) var commandExchange: String?
    @Option(help: help("COMMAND_ROUTING_KEY")) var commandRoutingKey: String?
    @Option(help: help("COMMAND_QUEUE")) var commandQueue: String?
    @Option(help: help("DEAD_LETTER_EXCHANGE")) var deadLetterExchange: String?
    @Option(help: help("DEAD_LETTER_QUEUE")) var deadLetterQueue: String?
    @Option(help: help("EVENTS_EXCHANGE")) var eventsExchange: String?
    @Option(help: help("REPLIES_QUEUE")) var repliesQueue: String?
    @Option(help: help("REPLIES_BINDING_KEY")) var repliesBindingKey: String?

    private static func help(_ variable: String) -> ArgumentHelp {
        guard let setting = WorkerConfiguration.setting(variable) else { return ArgumentHelp("(env \(variable))") }
        return ArgumentHelp(setting.help, valueName: "value")
    }

    /// The flags given, by flag name (`amqp-url` → value): the options' own names, as
    /// ArgumentParser derives them from the property names.
    var givenFlags: [String: String] {
        var flags: [String: String] = [:]
        for child in Mirror(reflecting: self).children {
            guard let label = child.label, let option = child.value as? Option<String?>, let value = option.wrappedValue else { continue }
            flags[Self.flagName(property: String(label.drop { $0 == "_" }))] = value
        }
        return flags
    }

    /// ArgumentParser's long name for a property: words split at case changes, lowercased,
    /// joined by dashes (`databaseBusyTimeoutMs` → `database-busy-timeout-ms`, `amqpURL` → `amqp-url`).
    static func flagName(property: String) -> String {
        var name = ""
        let characters = Array(property)
        for (index, character) in characters.enumerated() {
            if character.isUppercase, index > 0 {
                let previous = characters[index - 1]
                let nextIsLower = index + 1 < characters.count && characters[index + 1].isLowercase
                if previous.isLowercase || previous.isNumber || (previous.isUppercase && nextIsLower) { name.append("-") }
            }
            name.append(Character(character.lowercased()))
        }
        return name
    }

    /// The configuration, with logging set up as it says.
    func bootstrap(label: String) throws -> (WorkerConfiguration, Logger) {
        let configuration = try configuration()
        // With tracing configured, each line logged inside a span carries trace_id and span_id.
        let traced = TracingBackend.isConfigured(configuration.tracingEnvironment(ProcessInfo.processInfo.environment))
        bootstrapLogging(level: configuration.logLevel, format: configuration.logFormat,
                         metadataProvider: traced ? TracingBackend.loggingMetadataProvider() : nil)
        var logger = Logger(label: label)
        logger.logLevel = configuration.logLevel
        return (configuration, logger)
    }

    /// Flags first, then the environment, then the defaults.
    func configuration(environment: [String: String] = ProcessInfo.processInfo.environment) throws -> WorkerConfiguration {
        let flags = givenFlags
        do {
            return try WorkerConfiguration { variable in
                WorkerConfiguration.setting(variable).flatMap { flags[$0.flag] } ?? environment[variable]
            }
        } catch {
            throw ValidationError(error.description)
        }
    }
}
