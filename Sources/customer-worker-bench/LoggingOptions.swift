import ArgumentParser
import Foundation
import Logging
import Observability

/// `--log-level` / LOG_LEVEL for commands that take no worker settings (the benchmark).
struct LoggingOptions: ParsableArguments {
    @Option(help: "trace, debug, info, notice, warning, error or critical (env LOG_LEVEL; default warning).")
    var logLevel: String?

    func bootstrap(label: String) -> Logger {
        let raw = logLevel ?? ProcessInfo.processInfo.environment["LOG_LEVEL"] ?? "warning"
        let level = parseLogLevel(raw) ?? .warning
        bootstrapLogging(level: level, format: .text)
        var logger = Logger(label: label)
        logger.logLevel = level
        return logger
    }
}
