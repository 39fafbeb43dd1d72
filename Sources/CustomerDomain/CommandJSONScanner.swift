/// Reads a command body in one pass over its bytes: checks that it is one JSON value (RFC 8259),
/// that the value is an object, and sorts its keys into known fields and unknown keys.
///
/// Strict where the contract is: a member name given twice in one object (at any depth) and a
/// trailing comma before `}` or `]` are refused, because every JSON Schema validator and common
/// parser (Python, JavaScript, Go) reads a duplicated key as its last value: the sending team's
/// tooling would validate a different command than the one executed. A leading UTF-8 byte order
/// mark is skipped (RFC 8259 allows a parser to ignore it), as Foundation's reader does.
/// Syntax is checked to the end of the body first: a body that is not JSON at all is `invalidJSON`
/// even when a duplicate came earlier. Duplicate detection is one hash-set insert per key.
///
/// It replaces `JSONDecoder` on the hot path: a command is a flat object of strings, and the
/// generic `Decodable` machinery (a value map, coding paths, existential containers) cost more
/// than all the validation rules together. Only what the validator needs is materialised: the keys,
/// and the string values of known fields; every other value is checked and skipped.
struct CommandJSONScanner {
    enum Failure: Error, Equatable {
        /// Not JSON at all (syntax, a bad escape, a lone surrogate, nesting too deep).
        case invalidJSON
        /// Valid JSON whose top-level value is not an object.
        case notAnObject
        /// Syntactically JSON, but a member name appears twice in one object (the first such name).
        case duplicateKey(String)
        /// Syntactically JSON, but a `,` comes right before `}` or `]`.
        case trailingComma
    }

    /// Nesting deeper than this is refused as invalid, like Foundation's decoder does.
    static let maximumDepth = 512

    private let bytes: UnsafeBufferPointer<UInt8>
    /// The body `bytes` points into: a field's value is a range of it (`FieldText`).
    private let body: [UInt8]
    private var position = 0
    /// The first duplicate key or trailing comma, reported once the syntax has been checked.
    private var violation: Failure?

    private init(_ bytes: UnsafeBufferPointer<UInt8>, of body: [UInt8]) {
        self.bytes = bytes
        self.body = body
    }

    static func scan(_ body: [UInt8]) -> Result<RawCommandObject, Failure> {
        body.withUnsafeBufferPointer { buffer in
            var scanner = CommandJSONScanner(buffer, of: body)
            do throws(Failure) {
                return .success(try scanner.document())
            } catch {
                return .failure(error)
            }
        }
    }

    // MARK: Document and object

    private mutating func document() throws(Failure) -> RawCommandObject {
        if bytes.starts(with: [0xEF, 0xBB, 0xBF]) { position = 3 }
        skipWhitespace()
        guard let first = peek() else { throw .invalidJSON }
        guard first == UInt8(ascii: "{") else {
            try skipValue(depth: 0)
            try expectEnd()
            throw violation ?? .notAnObject
        }
        position += 1
        var object = RawCommandObject()
        // Known fields are noted as bits (one per field, in `allCases` order), others in a set:
        // hashing every key of every command was a third of the scanner's time.
        var seenFields: UInt32 = 0
        var seen = Set<String>()
        skipWhitespace()
        while !closes(UInt8(ascii: "}")) {
            guard peek() == UInt8(ascii: "\"") else { throw .invalidJSON }
            let (field, otherKey) = try memberName()
            if let field {
                let bit: UInt32 = 1 << field.position
                if seenFields & bit != 0, violation == nil { violation = .duplicateKey(field.rawValue) }
                seenFields |= bit
            } else {
                noteKey(otherKey, in: &seen)
            }
            skipWhitespace()
            try expect(UInt8(ascii: ":"))
            skipWhitespace()
            if let field {
                // A repeated field is a violation, thrown once the syntax is checked: the value
                // kept then does not matter.
                object.fields[field] = try fieldValue()
            } else {
                try skipValue(depth: 1)
                object.unknownKeys.append(otherKey)
            }
            try separator(closing: UInt8(ascii: "}"))
        }
        try expectEnd()
        if let violation { throw violation }
        object.unknownKeys.sort()
        return object
    }

    /// A top-level member name: the known field it names, or else the name itself. A name without
    /// escapes is matched on the body's bytes, so a known field's name never becomes a `String`
    /// (names of 16 bytes or more, such as `shippingAddress1`, each took an allocation).
    private mutating func memberName() throws(Failure) -> (field: CustomerField?, other: String) {
        let start = position + 1
        let end = try plainStringEnd()
        if let end {
            if let field = CustomerField(utf8: UnsafeBufferPointer(rebasing: bytes[start..<end])) { return (field, "") }
            return (nil, String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self))
        }
        let name = try escapedString(from: start)
        if let field = CustomerField(key: name) { return (field, "") }
        return (nil, name)
    }

    /// Records the first key that repeats within one object.
    private mutating func noteKey(_ key: String, in seen: inout Set<String>) {
        if !seen.insert(key).inserted, violation == nil { violation = .duplicateKey(key) }
    }

    /// A known field's value: its string, null, or anything else (skipped).
    private mutating func fieldValue() throws(Failure) -> RawFieldValue {
        switch peek() {
        case UInt8(ascii: "\""):
            return .string(try text())
        case UInt8(ascii: "n"):
            try literal("null")
            return .null
        default:
            try skipValue(depth: 1)
            return .notString
        }
    }

    private mutating func expectEnd() throws(Failure) {
        skipWhitespace()
        guard position == bytes.count else { throw .invalidJSON }
    }

    // MARK: Skipping values

    private mutating func skipValue(depth: Int) throws(Failure) {
        guard let byte = peek() else { throw .invalidJSON }
        switch byte {
        case UInt8(ascii: "\""):
            _ = try text()
        case UInt8(ascii: "{"):
            try skipContainer(depth: depth, closing: UInt8(ascii: "}"), keyed: true)
        case UInt8(ascii: "["):
            try skipContainer(depth: depth, closing: UInt8(ascii: "]"), keyed: false)
        case UInt8(ascii: "t"):
            try literal("true")
        case UInt8(ascii: "f"):
            try literal("false")
        case UInt8(ascii: "n"):
            try literal("null")
        default:
            try number()
        }
    }

    private mutating func skipContainer(depth: Int, closing: UInt8, keyed: Bool) throws(Failure) {
        guard depth < Self.maximumDepth else { throw .invalidJSON }
        position += 1
        var seen = Set<String>()
        while !closes(closing) {
            if keyed {
                guard peek() == UInt8(ascii: "\"") else { throw .invalidJSON }
                noteKey(try string(), in: &seen)
                skipWhitespace()
                try expect(UInt8(ascii: ":"))
                skipWhitespace()
            }
            try skipValue(depth: depth + 1)
            try separator(closing: closing)
        }
    }

    /// Skips whitespace; true (and past it) when `closing` comes next.
    private mutating func closes(_ closing: UInt8) -> Bool {
        skipWhitespace()
        guard peek() == closing else { return false }
        position += 1
        return true
    }

    /// After a member or element: a comma, or the container's end (left for `closes`).
    private mutating func separator(closing: UInt8) throws(Failure) {
        skipWhitespace()
        if peek() == UInt8(ascii: ",") {
            position += 1
            skipWhitespace()
            if peek() == closing, violation == nil { violation = .trailingComma }
        } else if peek() != closing {
            throw .invalidJSON
        }
    }

    private mutating func literal(_ word: StaticString) throws(Failure) {
        let count = word.utf8CodeUnitCount
        guard bytes.count - position >= count else { throw .invalidJSON }
        for offset in 0..<count where bytes[position + offset] != word.utf8Start[offset] {
            throw .invalidJSON
        }
        position += count
    }

    /// `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    private mutating func number() throws(Failure) {
        if peek() == UInt8(ascii: "-") { position += 1 }
        guard let first = peek(), isDigit(first) else { throw .invalidJSON }
        position += 1
        if first != UInt8(ascii: "0") { skipDigits() }
        if peek() == UInt8(ascii: ".") {
            position += 1
            try requireDigits()
        }
        if peek() == UInt8(ascii: "e") || peek() == UInt8(ascii: "E") {
            position += 1
            if peek() == UInt8(ascii: "+") || peek() == UInt8(ascii: "-") { position += 1 }
            try requireDigits()
        }
    }

    private mutating func requireDigits() throws(Failure) {
        guard let digit = peek(), isDigit(digit) else { throw .invalidJSON }
        skipDigits()
    }

    private mutating func skipDigits() {
        while let byte = peek(), isDigit(byte) { position += 1 }
    }

    private func isDigit(_ byte: UInt8) -> Bool { byte &- UInt8(ascii: "0") < 10 }

    // MARK: Strings

    /// The string starting at the opening quote, as the body's bytes when it has no escape, else
    /// unescaped. The body is valid UTF-8 already (checked before scanning), so unescaped runs
    /// are copied as they are.
    private mutating func text() throws(Failure) -> FieldText {
        let start = position + 1
        if let end = try plainStringEnd() { return FieldText(body, start..<end) }
        let unescaped = try escapedBytes(from: start)
        return FieldText(unescaped, unescaped.indices)
    }

    /// From the opening quote: the end of the string's bytes when it has no escape (and past its
    /// closing quote), or nil at its first backslash (left there for `escapedString`).
    private mutating func plainStringEnd() throws(Failure) -> Int? {
        position += 1  // the opening quote
        while position < bytes.count {
            let byte = bytes[position]
            if byte == UInt8(ascii: "\"") {
                position += 1
                return position - 1
            }
            if byte == UInt8(ascii: "\\") { return nil }
            guard byte >= 0x20 else { throw .invalidJSON }
            position += 1
        }
        throw .invalidJSON
    }

    /// The string starting at the opening quote, unescaped (a key of a nested object).
    private mutating func string() throws(Failure) -> String {
        let start = position + 1
        if let end = try plainStringEnd() {
            return String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<end]), as: UTF8.self)
        }
        return try escapedString(from: start)
    }

    private mutating func escapedString(from start: Int) throws(Failure) -> String {
        String(decoding: try escapedBytes(from: start), as: UTF8.self)
    }

    /// A string's bytes, unescaped, from its start to past its closing quote; `position` is at
    /// its first backslash.
    private mutating func escapedBytes(from start: Int) throws(Failure) -> [UInt8] {
        var utf8 = Array(bytes[start..<position])
        while position < bytes.count {
            let byte = bytes[position]
            position += 1
            switch byte {
            case UInt8(ascii: "\""):
                return utf8
            case UInt8(ascii: "\\"):
                guard let escaped = next() else { throw .invalidJSON }
                switch escaped {
                case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): utf8.append(escaped)
                case UInt8(ascii: "b"): utf8.append(0x08)
                case UInt8(ascii: "f"): utf8.append(0x0C)
                case UInt8(ascii: "n"): utf8.append(0x0A)
                case UInt8(ascii: "r"): utf8.append(0x0D)
                case UInt8(ascii: "t"): utf8.append(0x09)
                case UInt8(ascii: "u"): utf8.append(contentsOf: try unicodeEscape())
                default: throw .invalidJSON
                }
            default:
                guard byte >= 0x20 else { throw .invalidJSON }
                utf8.append(byte)
            }
        }
        throw .invalidJSON
    }

    /// After `\u`: four hex digits, and for a high surrogate the `\uXXXX` of its low surrogate.
    private mutating func unicodeEscape() throws(Failure) -> String.UTF8View {
        let unit = try hexQuad()
        let scalar: Unicode.Scalar?
        switch unit {
        case 0xD800...0xDBFF:
            guard next() == UInt8(ascii: "\\"), next() == UInt8(ascii: "u") else { throw .invalidJSON }
            let low = try hexQuad()
            guard (0xDC00...0xDFFF).contains(low) else { throw .invalidJSON }
            scalar = Unicode.Scalar(0x10000 + ((UInt32(unit) - 0xD800) << 10) + (UInt32(low) - 0xDC00))
        case 0xDC00...0xDFFF:
            throw .invalidJSON
        default:
            scalar = Unicode.Scalar(UInt32(unit))
        }
        guard let scalar else { throw .invalidJSON }
        return String(Character(scalar)).utf8
    }

    private mutating func hexQuad() throws(Failure) -> UInt16 {
        guard bytes.count - position >= 4 else { throw .invalidJSON }
        var value: UInt16 = 0
        for _ in 0..<4 {
            let byte = bytes[position]
            position += 1
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw .invalidJSON
            }
            value = value << 4 | UInt16(digit)
        }
        return value
    }

    // MARK: Bytes

    private func peek() -> UInt8? {
        position < bytes.count ? bytes[position] : nil
    }

    private mutating func next() -> UInt8? {
        guard position < bytes.count else { return nil }
        defer { position += 1 }
        return bytes[position]
    }

    private mutating func expect(_ byte: UInt8) throws(Failure) {
        guard next() == byte else { throw .invalidJSON }
    }

    private mutating func skipWhitespace() {
        while let byte = peek(), byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09 { position += 1 }
    }
}
