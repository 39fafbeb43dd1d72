/// A type whose JSON form is an object with its keys in one fixed order.
///
/// `JSONEncoder` emits keys in hash order, which changes from process to process, but a stored reply
/// is replayed byte for byte and consumers read keys in the contract's order. So each wire type lists
/// its keys once, in `writeFields`, and two writers consume that list: `JSONBytesWriter` for the
/// canonical bytes and the `Encodable` conformance for any `Encoder`.
public protocol OrderedJSONObject: Encodable {
    func writeFields(to writer: inout some JSONFieldWriter) throws
}

/// Receives the fields of an `OrderedJSONObject` in order. A nil value is written as `null`.
public protocol JSONFieldWriter {
    mutating func write(_ key: String, _ value: String?) throws
    mutating func write(_ key: String, _ value: Int) throws
    mutating func write(_ key: String, _ value: Bool) throws
    mutating func write(_ key: String, _ value: [String]?) throws
    mutating func write(_ key: String, _ value: (some OrderedJSONObject)?) throws
    mutating func write(_ key: String, _ value: [some OrderedJSONObject]) throws
    mutating func write(_ key: String, _ value: Timestamp?) throws
}

extension JSONFieldWriter {
    public mutating func write(_ key: String, _ value: Timestamp?) throws {
        try write(key, value?.iso8601)
    }

    public mutating func write<Value: RawRepresentable<String>>(_ key: String, _ value: Value?) throws {
        try write(key, value?.rawValue)
    }

    /// For keys that a format makes optional rather than nullable: nothing is written for nil.
    public mutating func writeIfPresent(_ key: String, _ value: String?) throws {
        if let value { try write(key, value) }
    }

    public mutating func writeIfPresent(_ key: String, _ value: [String]?) throws {
        if let value { try write(key, value) }
    }

    public mutating func writeIfPresent(_ key: String, _ value: Timestamp?) throws {
        if let value { try write(key, value) }
    }
}

extension OrderedJSONObject {
    /// The canonical JSON bytes: compact, keys in contract order, every nullable key present.
    public func canonicalJSON() -> [UInt8] {
        JSONBytesWriter.bytes(of: self)
    }

    public func encode(to encoder: any Encoder) throws {
        var writer = KeyedContainerFieldWriter(container: encoder.container(keyedBy: JSONKey.self))
        try writeFields(to: &writer)
    }
}

/// Writes compact JSON into a byte buffer. Never fails: `throws` exists only for the protocol.
public struct JSONBytesWriter: JSONFieldWriter {
    public private(set) var bytes: [UInt8] = []
    private var isFirstField = true

    public init() {
        bytes.reserveCapacity(1024)
    }

    static func bytes(of object: some OrderedJSONObject) -> [UInt8] {
        var writer = JSONBytesWriter()
        writer.writeObject(object)
        return writer.bytes
    }

    public mutating func writeObject(_ object: some OrderedJSONObject) {
        bytes.append(UInt8(ascii: "{"))
        let outerIsFirst = isFirstField
        isFirstField = true
        // The byte writer itself never throws, so neither can writeFields through it.
        try? object.writeFields(to: &self)
        isFirstField = outerIsFirst
        bytes.append(UInt8(ascii: "}"))
    }

    public mutating func write(_ key: String, _ value: String?) {
        writeKey(key)
        if let value { writeString(value) } else { writeNull() }
    }

    public mutating func write(_ key: String, _ value: Int) {
        writeKey(key)
        bytes.append(contentsOf: String(value).utf8)
    }

    public mutating func write(_ key: String, _ value: Bool) {
        writeKey(key)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    public mutating func write(_ key: String, _ value: Timestamp?) {
        writeKey(key)
        guard let value else { return writeNull() }
        bytes.append(UInt8(ascii: "\""))
        value.appendISO8601(to: &bytes)
        bytes.append(UInt8(ascii: "\""))
    }

    public mutating func write(_ key: String, _ value: [String]?) {
        writeKey(key)
        guard let value else { return writeNull() }
        bytes.append(UInt8(ascii: "["))
        for (index, element) in value.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            writeString(element)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    public mutating func write(_ key: String, _ value: (some OrderedJSONObject)?) {
        writeKey(key)
        if let value { writeObject(value) } else { writeNull() }
    }

    public mutating func write(_ key: String, _ value: [some OrderedJSONObject]) {
        writeKey(key)
        bytes.append(UInt8(ascii: "["))
        for (index, element) in value.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            writeObject(element)
        }
        bytes.append(UInt8(ascii: "]"))
    }

    private mutating func writeKey(_ key: String) {
        if !isFirstField { bytes.append(UInt8(ascii: ",")) }
        isFirstField = false
        // Keys are the contract's own ASCII names, never user input: nothing to escape.
        assert(!key.utf8.contains(where: Self.needsEscape))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: key.utf8)
        bytes.append(contentsOf: "\":".utf8)
    }

    private mutating func writeNull() {
        bytes.append(contentsOf: "null".utf8)
    }

    private mutating func writeString(_ string: String) {
        bytes.append(UInt8(ascii: "\""))
        var string = string
        // One pass over contiguous UTF-8 (a buffer, not the String view) on the reply hot path.
        string.withUTF8 { utf8 in
            if utf8.contains(where: Self.needsEscape) {
                for byte in utf8 { appendEscaped(byte) }
            } else {
                bytes.append(contentsOf: utf8)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    private mutating func appendEscaped(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""): bytes.append(contentsOf: #"\""#.utf8)
        case UInt8(ascii: "\\"): bytes.append(contentsOf: #"\\"#.utf8)
        case 0x0A: bytes.append(contentsOf: #"\n"#.utf8)
        case 0x0D: bytes.append(contentsOf: #"\r"#.utf8)
        case 0x09: bytes.append(contentsOf: #"\t"#.utf8)
        case 0x08: bytes.append(contentsOf: #"\b"#.utf8)
        case 0x0C: bytes.append(contentsOf: #"\f"#.utf8)
        case ..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            bytes.append(contentsOf: #"\u00"#.utf8)
            bytes.append(hex[Int(byte >> 4)])
            bytes.append(hex[Int(byte & 0x0F)])
        default: bytes.append(byte)
        }
    }
}

/// Adapts a keyed encoding container to `JSONFieldWriter`, for `Encodable`.
struct KeyedContainerFieldWriter: JSONFieldWriter {
    var container: KeyedEncodingContainer<JSONKey>

    mutating func write(_ key: String, _ value: String?) throws {
        try container.encode(value, forKey: JSONKey(key))
    }

    mutating func write(_ key: String, _ value: Int) throws {
        try container.encode(value, forKey: JSONKey(key))
    }

    mutating func write(_ key: String, _ value: Bool) throws {
        try container.encode(value, forKey: JSONKey(key))
    }

    mutating func write(_ key: String, _ value: [String]?) throws {
        try container.encode(value, forKey: JSONKey(key))
    }

    mutating func write(_ key: String, _ value: (some OrderedJSONObject)?) throws {
        try container.encode(value, forKey: JSONKey(key))
    }

    mutating func write(_ key: String, _ value: [some OrderedJSONObject]) throws {
        try container.encode(value, forKey: JSONKey(key))
    }
}

/// A coding key for keys only known at run time.
struct JSONKey: CodingKey, Hashable {
    var stringValue: String
    var intValue: Int? { nil }

    init(_ string: String) { stringValue = string }
    init(stringValue: String) { self.stringValue = stringValue }
    init?(intValue: Int) { nil }
}

// The replies are written once per command. Called through the protocol extension from another
// module, `canonicalJSON()` runs unspecialised generic code: every field a witness-table call on
// an opaque writer. These concrete entry points let the optimiser specialise the whole writer for
// each reply type.
extension CustomerCreated {
    public func canonicalJSON() -> [UInt8] { JSONBytesWriter.bytes(of: self) }
}

extension CustomerCreateFailed {
    public func canonicalJSON() -> [UInt8] { JSONBytesWriter.bytes(of: self) }
}
