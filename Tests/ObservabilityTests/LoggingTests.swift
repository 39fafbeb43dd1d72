import Foundation
import Logging
import Observability
import Synchronization
import Testing

/// Collects the lines a ``JSONLogHandler`` writes.
final class CapturedLines: Sendable {
    private let lines = Mutex<[[UInt8]]>([])

    var sink: LogLineSink {
        LogLineSink { [self] line in lines.withLock { $0.append(line) } }
    }

    var all: [String] { lines.withLock { $0.map { String(decoding: $0, as: UTF8.self) } } }

    func logger(label: String = "customer-worker.test", level: Logger.Level = .info) -> Logger {
        let sink = self.sink
        var logger = Logger(label: label) { label in JSONLogHandler(label: label, sink: sink) }
        logger.logLevel = level
        return logger
    }
}

private func parseObject(_ line: String) throws -> [String: Any] {
    let object = try JSONSerialization.jsonObject(with: Data(line.utf8))
    return try #require(object as? [String: Any])
}

@Suite struct JSONLogHandlerTests {
    @Test func oneObjectPerLineWithStableKeysAndFlattenedMetadata() throws {
        let captured = CapturedLines()
        var logger = captured.logger()
        logger[metadataKey: "amqp.session"] = "3"
        logger.info(
            "batch handled",
            metadata: [
                "batch.size": .stringConvertible(42),
                "reply.replayed": .stringConvertible(true),
                "command.message_id": "msg-\"1\"\nnext",
                "nested": .dictionary(["a": "1", "b": .array(["x", .stringConvertible(2)])]),
            ])

        let lines = captured.all
        try #require(lines.count == 1)
        let line = lines[0]
        #expect(line.hasSuffix("\n"))
        #expect(line.dropLast().contains("\n") == false)
        #expect(line.hasPrefix(#"{"timestamp":""#))

        let object = try parseObject(line)
        #expect(object["level"] as? String == "info")
        #expect(object["label"] as? String == "customer-worker.test")
        #expect(object["message"] as? String == "batch handled")
        #expect(object["source"] as? String == "ObservabilityTests")
        let timestamp = try #require(object["timestamp"] as? String)
        #expect(timestamp.wholeMatch(of: /\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z/) != nil)

        #expect(object["amqp.session"] as? String == "3")
        #expect(object["batch.size"] as? Int == 42)
        #expect(object["reply.replayed"] as? Bool == true)
        #expect(object["command.message_id"] as? String == "msg-\"1\"\nnext")
        let nested = try #require(object["nested"] as? [String: Any])
        #expect(nested["a"] as? String == "1")
        let array = try #require(nested["b"] as? [Any])
        #expect(array.count == 2)
        #expect(array.first as? String == "x")
        #expect(array.last as? Int == 2)
    }

    @Test func callMetadataWinsAndFixedKeysAreNeverOverwritten() throws {
        let captured = CapturedLines()
        var logger = captured.logger()
        logger[metadataKey: "error"] = "from handler"
        logger.warning("transient failure", metadata: ["error": "from call", "message": "not the message"])

        let object = try parseObject(try #require(captured.all.first))
        #expect(object["level"] as? String == "warning")
        #expect(object["message"] as? String == "transient failure")
        #expect(object["metadata.message"] as? String == "not the message")
        #expect(object["error"] as? String == "from call")
    }

    @Test func levelBelowThresholdIsNotWritten() {
        let captured = CapturedLines()
        let logger = captured.logger(level: .notice)
        logger.info("hidden")
        logger.debug("hidden")
        logger.notice("shown")
        #expect(captured.all.count == 1)
    }

    @Test func controlCharactersAndUnicodeRoundTrip() throws {
        let captured = CapturedLines()
        let text = "tab\there \u{01} bell \\ slash / é 日本 🚀"
        captured.logger().error("\(text)")
        let object = try parseObject(try #require(captured.all.first))
        #expect(object["message"] as? String == text)
    }

    @Test func concurrentWritersProduceWholeLines() async throws {
        let captured = CapturedLines()
        let logger = captured.logger()
        await withTaskGroup(of: Void.self) { group in
            for task in 0..<8 {
                group.addTask {
                    for index in 0..<50 {
                        logger.info("line", metadata: ["task": "\(task)", "index": "\(index)"])
                    }
                }
            }
        }
        let lines = captured.all
        #expect(lines.count == 400)
        for line in lines {
            _ = try parseObject(line)
        }
    }

    @Test func timestampsAreUTCWithMilliseconds() {
        #expect(JSONLogHandler.timestamp(seconds: 0, milliseconds: 0) == "1970-01-01T00:00:00.000Z")
        #expect(JSONLogHandler.timestamp(seconds: 1_700_000_000, milliseconds: 5) == "2023-11-14T22:13:20.005Z")
        #expect(JSONLogHandler.timestamp(seconds: 951_868_799, milliseconds: 999) == "2000-02-29T23:59:59.999Z")
    }
}

@Suite struct LogSettingsTests {
    @Test func parsesLevels() {
        #expect(parseLogLevel("info") == .info)
        #expect(parseLogLevel(" DEBUG ") == .debug)
        #expect(parseLogLevel("warn") == .warning)
        #expect(parseLogLevel("warning") == .warning)
        #expect(parseLogLevel("critical") == .critical)
        #expect(parseLogLevel("trace") == .trace)
        #expect(parseLogLevel("verbose") == nil)
        #expect(parseLogLevel("") == nil)
    }

    @Test func parsesFormats() {
        #expect(LogFormat(parsing: "json") == .json)
        #expect(LogFormat(parsing: "TEXT") == .text)
        #expect(LogFormat(parsing: "yaml") == nil)
    }
}

@Suite("Redaction")
struct RedactionTests {
    @Test(arguments: [
        ("amqp://user:secret@host:5672/%2f", "amqp://user:***@host:5672/%2f"),
        ("amqps://user:se/cr@et@host/v?heartbeat=5", "amqps://user:***@host/v?heartbeat=5"),
        ("postgres://app:pw@db.example:5432/customers", "postgres://app:***@db.example:5432/customers"),
        ("cannot use 'amqp://u:p@h:1/x': refused; also postgresql://a:b@c/d.", "cannot use 'amqp://u:***@h:1/x': refused; also postgresql://a:***@c/d."),
        ("amqp://guest@host/", "amqp://guest@host/"),
        ("amqp://host:5672/%2f", "amqp://host:5672/%2f"),
        ("no url here", "no url here"),
    ])
    func masksPasswords(input: String, expected: String) {
        #expect(Redaction.redactingCredentials(in: input) == expected)
    }

    @Test func logLinesAreRedacted() throws {
        let lines = CapturedLines()
        let sink = lines.sink
        var logger = Logger(label: "test") { label in RedactingLogHandler(JSONLogHandler(label: label, sink: sink)) }
        logger.logLevel = .trace
        logger[metadataKey: "handler.url"] = "amqp://a:handler-secret@h/"
        logger.error("failed on amqp://a:message-secret@h/", metadata: ["url": "postgres://b:meta-secret@db/x", "nested": ["u": "amqp://c:nested-secret@h"]])
        let text = lines.all.joined()
        for secret in ["handler-secret", "message-secret", "meta-secret", "nested-secret"] {
            #expect(!text.contains(secret), "\(secret) in \(text)")
        }
        #expect(text.contains("amqp://a:***@h/"))
    }

    @Test func textLinesEscapeControlCharactersInEveryValue() {
        #expect(Redaction.escapingControlCharacters(in: "plain é 中") == "plain é 中")
        #expect(Redaction.escapingControlCharacters(in: "a\nb\rc\td\u{0}e\u{1B}f\u{7F}g\u{85}h\u{2028}i")
                == #"a\nb\rc\td\u{0}e\u{1b}f\u{7f}g\u{85}h\u{2028}i"#)
        let events = CapturedEvents()
        var logger = Logger(label: "test") { _ in RedactingLogHandler(CapturingHandler(events: events), escapingControlCharacters: true) }
        logger.logLevel = .trace
        logger.notice("reply_to\nnot allowed", metadata: ["command.message_id": "m1\n2026-12-01 info forged line", "nested": ["k": "x\ry"]])
        let (message, metadata) = events.last!
        #expect(message == #"reply_to\nnot allowed"#)
        #expect(metadata["command.message_id"] == .string(#"m1\n2026-12-01 info forged line"#))
        #expect(metadata["nested"] == .dictionary(["k": .string(#"x\ry"#)]))
    }
}

final class CapturedEvents: Sendable {
    private let events = Mutex<[(String, Logger.Metadata)]>([])
    func append(_ event: (String, Logger.Metadata)) { events.withLock { $0.append(event) } }
    var last: (String, Logger.Metadata)? { events.withLock { $0.last } }
}

struct CapturingHandler: LogHandler {
    let events: CapturedEvents
    var logLevel: Logger.Level = .trace
    var metadata: Logger.Metadata = [:]
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        events.append((event.message.description, event.metadata ?? [:]))
    }
}
