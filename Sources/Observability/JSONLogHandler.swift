#if canImport(Darwin)
import Darwin
#elseif canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import Logging
import Synchronization

/// Where ``JSONLogHandler`` sends its lines: each call receives one complete line, newline
/// included, and must write it in one piece.
public struct LogLineSink: Sendable {
    private let writeLine: @Sendable ([UInt8]) -> Void

    public init(_ writeLine: @escaping @Sendable ([UInt8]) -> Void) {
        self.writeLine = writeLine
    }

    public func write(_ line: [UInt8]) {
        writeLine(line)
    }

    /// Standard error (file descriptor 2). One lock for the whole process serialises the writes, so
    /// lines from concurrent loggers never interleave.
    public static let standardError = LogLineSink { line in
        standardErrorLock.withLock { _ in
            line.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = systemWrite(2, bytes.baseAddress! + offset, bytes.count - offset)
                    if written > 0 {
                        offset += written
                    } else if written < 0 && errno == EINTR {
                        continue
                    } else {
                        return  // Standard error is gone: nothing sensible left to do with a log line.
                    }
                }
            }
        }
    }
}

private let standardErrorLock = Mutex(())

private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer, _ count: Int) -> Int {
    #if canImport(Darwin)
    return Darwin.write(fd, buffer, count)
    #elseif canImport(Glibc)
    return Glibc.write(fd, buffer, count)
    #else
    return Musl.write(fd, buffer, count)
    #endif
}

/// A swift-log handler writing one JSON object per line.
///
/// Keys, in this order: `timestamp` (ISO 8601, UTC, milliseconds), `level`, `label`, `message`,
/// `source`, then every metadata key as-is, sorted. Metadata merges the handler's metadata, the
/// metadata provider's and the call's (later wins). Nested metadata becomes JSON objects and
/// arrays; string-convertible integers, finite floating-point numbers and booleans become JSON
/// numbers and booleans; everything else is a string. A metadata key equal to one of the five
/// fixed keys is written as `metadata.<key>`. An error passed to the log call is written as
/// `error` unless the metadata already has that key.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var metadataProvider: Logger.MetadataProvider?
    public var logLevel: Logger.Level = .info

    private let label: String
    private let sink: LogLineSink

    public init(label: String, metadataProvider: Logger.MetadataProvider? = nil, sink: LogLineSink = .standardError) {
        self.label = label
        self.metadataProvider = metadataProvider
        self.sink = sink
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var merged = metadata
        if let provided = metadataProvider?.get() {
            merged.merge(provided) { _, new in new }
        }
        if let explicit = event.metadata {
            merged.merge(explicit) { _, new in new }
        }
        if let error = event.error, merged["error"] == nil {
            merged["error"] = .string(String(describing: error))
        }
        sink.write(Self.encodeLine(
            timestamp: Self.timestamp(), level: event.level, label: label,
            message: event.message.description, source: event.source, metadata: merged))
    }

    /// The five fixed keys, in the order they are written.
    public static let fixedKeys = ["timestamp", "level", "label", "message", "source"]

    /// One complete line (newline included), as written for these values.
    public static func encodeLine(
        timestamp: String, level: Logger.Level, label: String, message: String, source: String,
        metadata: Logger.Metadata
    ) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(256)
        out.append(UInt8(ascii: "{"))
        let fixed = [timestamp, level.rawValue, label, message, source]
        for (index, key) in fixedKeys.enumerated() {
            if index > 0 { out.append(UInt8(ascii: ",")) }
            appendString(key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendString(fixed[index], to: &out)
        }
        for key in metadata.keys.sorted() {
            out.append(UInt8(ascii: ","))
            appendString(fixedKeys.contains(key) ? "metadata." + key : key, to: &out)
            out.append(UInt8(ascii: ":"))
            appendValue(metadata[key]!, to: &out)
        }
        out.append(UInt8(ascii: "}"))
        out.append(UInt8(ascii: "\n"))
        return out
    }

    private static func appendValue(_ value: Logger.Metadata.Value, to out: inout [UInt8]) {
        switch value {
        case .string(let string):
            appendString(string, to: &out)
        case .stringConvertible(let convertible):
            switch convertible {
            case let bool as Bool:
                out.append(contentsOf: (bool ? "true" : "false").utf8)
            case let integer as any BinaryInteger:
                out.append(contentsOf: String(describing: integer).utf8)
            case let double as Double where double.isFinite:
                out.append(contentsOf: String(describing: double).utf8)
            case let float as Float where float.isFinite:
                out.append(contentsOf: String(describing: float).utf8)
            default:
                appendString(convertible.description, to: &out)
            }
        case .dictionary(let dictionary):
            out.append(UInt8(ascii: "{"))
            for (index, key) in dictionary.keys.sorted().enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                appendString(key, to: &out)
                out.append(UInt8(ascii: ":"))
                appendValue(dictionary[key]!, to: &out)
            }
            out.append(UInt8(ascii: "}"))
        case .array(let array):
            out.append(UInt8(ascii: "["))
            for (index, element) in array.enumerated() {
                if index > 0 { out.append(UInt8(ascii: ",")) }
                appendValue(element, to: &out)
            }
            out.append(UInt8(ascii: "]"))
        }
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private static func appendString(_ string: String, to out: inout [UInt8]) {
        out.append(UInt8(ascii: "\""))
        for byte in string.utf8 {
            switch byte {
            case UInt8(ascii: "\""): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case UInt8(ascii: "\n"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case UInt8(ascii: "\r"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case UInt8(ascii: "\t"): out.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0..<0x20, 0x7F:
                out.append(contentsOf: Array("\\u00".utf8))
                out.append(hexDigits[Int(byte >> 4)])
                out.append(hexDigits[Int(byte & 0x0F)])
            default:
                out.append(byte)
            }
        }
        out.append(UInt8(ascii: "\""))
    }

    /// The current time as `2025-01-31T12:34:56.789Z`.
    public static func timestamp() -> String {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return timestamp(seconds: Int(now.tv_sec), milliseconds: Int(now.tv_nsec) / 1_000_000)
    }

    /// `seconds` since the Unix epoch plus `milliseconds`, as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
    public static func timestamp(seconds: Int, milliseconds: Int) -> String {
        var time = time_t(seconds)
        var parts = tm()
        gmtime_r(&time, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let digits = String(value)
            return String(repeating: "0", count: max(0, width - digits.count)) + digits
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2)
            + "T" + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2)
            + "." + pad(Int32(milliseconds), 3) + "Z"
    }
}
