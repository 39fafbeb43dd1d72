import ArgumentParser
import CustomerWorker
import Foundation
import Logging
import Observability
import WorkerTracing

/// The worker's settings as flags. Each flag overrides its environment variable. Everything about
/// a setting (variable, flag, default, validation, help) is its row of `WorkerConfiguration.settings`,
/// and so is its flag here: there is no property per flag.
///
/// How: ArgumentParser finds a type's options by reflecting a default instance
/// (`Mirror(reflecting: Self())`), and `Mirror` asks a `CustomReflectable` type for its children.
/// This type answers with one `Option<String?>` per row, named by the row's flag and carrying its
/// help, so `--help`, usage errors (exit 64) and `--experimental-dump-help` are ArgumentParser's
/// own. Parsed values come back through `init(from:)`, one coding key per row (the same key the
/// child was given). A test checks the executable's flags and help against the table.
///
/// Why not swift-configuration (1.4.0) here: its `CommandLineArgumentsProvider` (trait
/// `CommandLineArguments`) and `EnvironmentVariablesProvider` read values by key, which the table's
/// `init(lookup:)` already does in three lines (flag, then variable, then the property's default);
/// they carry no help text, usage errors or subcommands. ArgumentParser owns those (`--help` per
/// flag, exit 64 on a bad flag, `run`/`publish`/… sharing these options), so the provider would be
/// a second parser beside it.
struct WorkerOptions: ParsableArguments, CustomReflectable {
    /// The flags given, by flag name (`amqp-url` → value).
    private(set) var givenFlags: [String: String] = [:]

    init() {}

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: SettingKey.self)
        for setting in WorkerConfiguration.settings {
            let option = try container.decode(Option<String?>.self, forKey: SettingKey(setting.flag))
            if let value = option.wrappedValue { givenFlags[setting.flag] = value }
        }
    }

    /// One option per setting, labelled with its flag (ArgumentParser's key for it).
    var customMirror: Mirror {
        Mirror(self, children: WorkerConfiguration.settings.map { setting in
            (label: setting.flag, value: Option<String?>(name: .customLong(setting.flag), help: ArgumentHelp(setting.help, valueName: "value")))
        })
    }

    /// A setting's coding key: its flag.
    private struct SettingKey: CodingKey {
        let stringValue: String
        var intValue: Int? { nil }
        init(_ flag: String) { stringValue = flag }
        init?(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
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
