import Foundation
import Logging
import Synchronization

/// How log records are written to standard error.
public enum LogFormat: String, Sendable, CaseIterable {
    /// swift-log's `StreamLogHandler`: one human-readable line per record.
    case text
    /// ``JSONLogHandler``: one JSON object per line, with stable keys.
    case json

    /// Parses `text` or `json`, ignoring case and surrounding whitespace.
    public init?(parsing raw: String) {
        self.init(rawValue: raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased())
    }
}

/// Parses a log level name: `trace`, `debug`, `info`, `notice`, `warning` (or `warn`), `error`,
/// `critical`; case and surrounding whitespace are ignored. Returns nil for anything else.
public func parseLogLevel(_ raw: String) -> Logger.Level? {
    let name = raw.trimmingCharacters(in: .whitespacesAndNewlines).lowercased()
    if name == "warn" { return .warning }
    return Logger.Level(rawValue: name)
}

private let loggingBootstrapped = Mutex(false)

/// Installs the process-wide log handler (`LoggingSystem.bootstrap`), writing to standard error;
/// URL passwords are redacted from every record (``RedactingLogHandler``).
///
/// swift-log allows a single bootstrap per process: the first call installs the handler and
/// returns true; later calls change nothing and return false.
///
/// `metadataProvider`: metadata every line gets from its task's context (the trace's ids, when
/// tracing is on).
@discardableResult
public func bootstrapLogging(level: Logger.Level, format: LogFormat, metadataProvider: Logger.MetadataProvider? = nil) -> Bool {
    let first = loggingBootstrapped.withLock { done in
        defer { done = true }
        return !done
    }
    guard first else { return false }
    switch format {
    case .text:
        LoggingSystem.bootstrap({ label, metadataProvider in
            // One event, one line: control characters in values are escaped (JSON escapes its own).
            var handler = RedactingLogHandler(StreamLogHandler.standardError(label: label, metadataProvider: metadataProvider),
                                              escapingControlCharacters: true)
            handler.logLevel = level
            return handler
        }, metadataProvider: metadataProvider)
    case .json:
        LoggingSystem.bootstrap({ label, metadataProvider in
            var handler = RedactingLogHandler(JSONLogHandler(label: label, metadataProvider: metadataProvider))
            handler.logLevel = level
            return handler
        }, metadataProvider: metadataProvider)
    }
    return true
}
