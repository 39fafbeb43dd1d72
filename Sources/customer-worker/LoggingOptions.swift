import ArgumentParser
import Foundation
import Logging

/// `--log-level` / LOG_LEVEL (default info).
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL; default info).")
    var logLevel: String?

    func bootstrap(label: String) -> Logger {
        let raw = logLevel ?? ProcessInfo.processInfo.environment["LOG_LEVEL"] ?? "info"
        let level = Logger.Level(rawValue: raw.lowercased()) ?? .info
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}
