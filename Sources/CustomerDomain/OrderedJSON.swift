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

/// Tokens that stand for phrases of the JSON a `JSONBytesWriter` writes (a key's `"key":`, and
/// `null`, `true`, `false`), for a second, compact copy of it written at the same time (the
/// stored form of a reply, `StoredReplyBody`). A token must never hold a byte JSON can hold
/// unescaped (0x20 and above), so that the compact copy expands back unambiguously.
public struct JSONPhraseTokens: Sendable {
    let prefix: [UInt8]
    let null: [UInt8]
    let `true`: [UInt8]
    let `false`: [UInt8]
    /// The keys with a token, and their tokens, found through `slots` without hashing a string
    /// (a reply writes about 60 keys: a dictionary lookup each cost more than the tokens save).
    private let names: [[UInt8]]
    private let keyTokens: [[UInt8]]
    /// From `slot(of:)` on, the first slot holding the key (its index into `names` + 1) or 0
    /// (none): open addressing, at most half full.
    private let slots: [Int16]
    private static let slotCount = 1024

    /// `prefix` starts the compact copy; `keys` maps a key's name (without quotes or colon) to
    /// the token of its phrase; a key without a token is written as it is.
    public init(prefix: [UInt8], keys: [(name: String, token: [UInt8])], null: [UInt8], true: [UInt8], false: [UInt8]) {
        self.prefix = prefix
        self.null = null
        self.true = `true`
        self.false = `false`
        var names: [[UInt8]] = []
        var keyTokens: [[UInt8]] = []
        var slots = [Int16](repeating: 0, count: Self.slotCount)
        for key in keys {
            let name = Array(key.name.utf8)
            guard !name.isEmpty, names.count < Self.slotCount / 2 else { continue }
            // Open addressing: the next free slot after a taken one.
            var slot = name.withUnsafeBufferPointer { Self.slot(of: $0) }
            while slots[slot] != 0 { slot = (slot + 1) % Self.slotCount }
            names.append(name)
            keyTokens.append(key.token)
            slots[slot] = Int16(names.count)
        }
        self.names = names
        self.keyTokens = keyTokens
        self.slots = slots
    }

    /// The token of the key `name`, if it has one.
    func token(ofKey name: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        guard !name.isEmpty else { return nil }
        var slot = Self.slot(of: name)
        while slots[slot] != 0 {
            let entry = Int(slots[slot]) - 1
            if names[entry].withUnsafeBufferPointer({ sameBytes($0, name) }) { return keyTokens[entry] }
            slot = (slot + 1) % Self.slotCount
        }
        return nil
    }


    /// Length, first, middle and last byte, mixed: a slot without reading the whole key.
    private static func slot(of name: UnsafeBufferPointer<UInt8>) -> Int {
        guard let first = name.first, let last = name.last else { return 0 }
        let mixed = (UInt32(name.count) &* 0x9E37_79B9) ^ (UInt32(first) &* 0x85EB_CA6B)
            ^ (UInt32(last) &* 0xC2B2_AE35) ^ (UInt32(name[name.count / 2]) &* 0x27D4_EB2F)
        return Int((mixed ^ (mixed >> 15)) % UInt32(slotCount))
    }
}

/// Writes compact JSON into a byte buffer. Never fails: `throws` exists only for the protocol.
///
/// Given `JSONPhraseTokens`, it also writes `compact`: the same bytes with every phrase that has a
/// token written as its token. Bytes between phrases are copied from `bytes` when the next
/// phrase (or the end) comes, so values are escaped once.
public struct JSONBytesWriter: JSONFieldWriter {
    public private(set) var bytes: [UInt8] = []
    private var isFirstField = true
    private let tokens: JSONPhraseTokens?
    private var compactCopy: [UInt8] = []
    /// How many of `bytes` `compactCopy` already stands for.
    private var copied = 0
    /// Set only while a `CustomerCreatedTemplate` is recorded (never on the reply hot path).
    var recording: TemplateRecording?

    public init() {
        tokens = nil
        bytes.reserveCapacity(1024)
    }

    public init(compactingWith tokens: JSONPhraseTokens) {
        self.tokens = tokens
        bytes.reserveCapacity(2048)
        compactCopy.reserveCapacity(1024)
        compactCopy.append(contentsOf: tokens.prefix)
    }

    /// The compact copy (see `JSONPhraseTokens`), complete up to the last byte written.
    public var compact: [UInt8] {
        var writer = self
        writer.copyPending()
        return writer.compactCopy
    }

    /// Copies the bytes written since the last phrase into the compact copy.
    private mutating func copyPending() {
        let from = copied
        bytes.withUnsafeBufferPointer { compactCopy.append(contentsOf: UnsafeBufferPointer(rebasing: $0[from...])) }
        copied = bytes.count
    }

    /// Writes `phrase` into `bytes` and, when it has a token, the token into the compact copy.
    private mutating func writePhrase(_ phrase: StaticString, token: [UInt8]?) {
        if token != nil { copyPending() }
        phrase.withUTF8Buffer { bytes.append(contentsOf: $0) }
        guard let token else { return }
        compactCopy.append(contentsOf: token)
        copied = bytes.count
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
        if recording != nil, recordSlot(key) { return }
        if let value { writeString(value) } else { writeNull() }
    }

    public mutating func write(_ key: String, _ value: Int) {
        writeKey(key)
        bytes.append(contentsOf: String(value).utf8)
    }

    public mutating func write(_ key: String, _ value: Bool) {
        writeKey(key)
        if value { writePhrase("true", token: tokens?.true) } else { writePhrase("false", token: tokens?.false) }
    }

    public mutating func write(_ key: String, _ value: Timestamp?) {
        writeKey(key)
        if recording != nil, recordSlot(key) { return }
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
        recording?.path.append(key)
        if let value { writeObject(value) } else { writeNull() }
        recording?.path.removeLast()
    }

    public mutating func write(_ key: String, _ value: [some OrderedJSONObject]) {
        writeKey(key)
        recording?.path.append(key)
        bytes.append(UInt8(ascii: "["))
        for (index, element) in value.enumerated() {
            if index > 0 { bytes.append(UInt8(ascii: ",")) }
            writeObject(element)
        }
        bytes.append(UInt8(ascii: "]"))
        recording?.path.removeLast()
    }

    /// While recording: when the value of `key` here is a slot, ends the literal written so far
    /// (both copies) at it and returns true; the value is then not written.
    private mutating func recordSlot(_ key: String) -> Bool {
        guard let slot = recording.flatMap({ CreatedReplySlot(path: $0.path, key: key) }) else { return false }
        let literal = takeLiteral()
        recording?.slots.append(slot)
        recording?.literals.append(literal)
        return true
    }

    /// What was written since the last `takeLiteral()` (or since the start), both copies, and
    /// starts both afresh.
    mutating func takeLiteral() -> (json: [UInt8], compact: [UInt8]) {
        copyPending()
        defer {
            bytes = []
            compactCopy = []
            copied = 0
        }
        return (bytes, compactCopy)
    }

    private mutating func writeKey(_ key: String) {
        if !isFirstField { bytes.append(UInt8(ascii: ",")) }
        isFirstField = false
        // Keys are the contract's own ASCII names, never user input: nothing to escape.
        assert(!key.utf8.contains(where: Self.needsEscape))
        var key = key
        key.withUTF8 { name in
            let token = tokens?.token(ofKey: name)
            if token != nil { copyPending() }
            bytes.append(UInt8(ascii: "\""))
            bytes.append(contentsOf: name)
            bytes.append(UInt8(ascii: "\""))
            bytes.append(UInt8(ascii: ":"))
            if let token {
                compactCopy.append(contentsOf: token)
                copied = bytes.count
            }
        }
    }

    private mutating func writeNull() {
        writePhrase("null", token: tokens?.null)
    }

    private mutating func writeString(_ string: String) {
        Self.appendString(string, to: &bytes)
    }

    /// `string` as a JSON string: quoted, and escaped where JSON requires it.
    static func appendString(_ string: String, to bytes: inout [UInt8]) {
        bytes.append(UInt8(ascii: "\""))
        var string = string
        // One pass over contiguous UTF-8 (a buffer, not the String view) on the reply hot path.
        string.withUTF8 { utf8 in
            if containsEscapable(utf8) {
                for byte in utf8 { appendEscaped(byte, to: &bytes) }
            } else {
                bytes.append(contentsOf: utf8)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }

    /// Whether any byte needs an escape: `needsEscape`, eight bytes at a time.
    static func containsEscapable(_ utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        ByteWords.containsControlOr(UInt8(ascii: "\""), UInt8(ascii: "\\"), in: utf8)
    }

    private static func needsEscape(_ byte: UInt8) -> Bool {
        byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\")
    }

    /// How many bytes escaping adds to `utf8` (`appendEscaped`'s output beyond one byte each), for
    /// a writer that sizes its buffer first (`CustomerCreatedTemplate.render`).
    static func escapeOverhead(_ utf8: UnsafeBufferPointer<UInt8>) -> Int {
        guard containsEscapable(utf8) else { return 0 }
        var overhead = 0
        for byte in utf8 where needsEscape(byte) {
            switch byte {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), 0x0A, 0x0D, 0x09, 0x08, 0x0C: overhead += 1
            default: overhead += 5  // \u00XX
            }
        }
        return overhead
    }

    private static func appendEscaped(_ byte: UInt8, to bytes: inout [UInt8]) {
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

    /// The canonical JSON and, written with it, its compact copy (see `JSONPhraseTokens`).
    public func canonicalJSON(compactingWith tokens: JSONPhraseTokens) -> (json: [UInt8], compact: [UInt8]) {
        var writer = JSONBytesWriter(compactingWith: tokens)
        writer.writeObject(self)
        return (writer.bytes, writer.compact)
    }
}

extension CustomerCreateFailed {
    public func canonicalJSON() -> [UInt8] { JSONBytesWriter.bytes(of: self) }
}

/// Byte for byte (a loop over the buffers: `elementsEqual` cost 300 instructions a key). For
/// names matched on the hot path: reply keys and command keys.
func sameBytes(_ one: UnsafeBufferPointer<UInt8>, _ other: UnsafeBufferPointer<UInt8>) -> Bool {
    guard one.count == other.count else { return false }
    for index in 0..<one.count where one[index] != other[index] { return false }
    return true
}
