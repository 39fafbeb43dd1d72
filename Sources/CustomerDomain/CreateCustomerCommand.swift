import Crypto

/// The fields of a create-customer command, in contract order; raw values are the JSON keys.
public enum CustomerField: String, CaseIterable, Sendable {
    case externalId, name, email
    case billingAddress1, billingAddress2, billingCity, billingCountry, billingState, billingZipCode
    case shippingAddress1, shippingAddress2, shippingCity, shippingCountry, shippingState, shippingZipCode
    case quickBooksId, stripeId

    /// Every field but `externalId`: these may be absent or null.
    public static let optionalFields = allCases.filter { $0 != .externalId }

    /// `init(rawValue:)` for a key of a command body, compared byte for byte with the names of
    /// its length: the `String` switch behind `init(rawValue:)` hashed every key of every command.
    init?(key: String) {
        var key = key
        guard let field = key.withUTF8({ CustomerField(utf8: $0) }) else { return nil }
        self = field
    }

    /// The field named by these UTF-8 bytes (a key as it stands in a body without escapes).
    init?(utf8 bytes: UnsafeBufferPointer<UInt8>) {
        guard bytes.count < Self.namesByLength.count else { return nil }
        for (name, field) in Self.namesByLength[bytes.count] where name.withUnsafeBufferPointer({ sameBytes($0, bytes) }) {
            self = field
            return
        }
        return nil
    }

    /// The fields' names as UTF-8, grouped by length (index: the length in bytes).
    private static let namesByLength: [[(name: [UInt8], field: CustomerField)]] = {
        let names = allCases.map { (name: Array($0.rawValue.utf8), field: $0) }
        var table = [[(name: [UInt8], field: CustomerField)]](repeating: [], count: (names.map(\.name.count).max() ?? 0) + 1)
        for entry in names { table[entry.name.count].append(entry) }
        return table
    }()

    /// The field's place in `allCases` (0..<17) without hashing (a test keeps the two in step).
    var position: Int {
        switch self {
        case .externalId: 0
        case .name: 1
        case .email: 2
        case .billingAddress1: 3
        case .billingAddress2: 4
        case .billingCity: 5
        case .billingCountry: 6
        case .billingState: 7
        case .billingZipCode: 8
        case .shippingAddress1: 9
        case .shippingAddress2: 10
        case .shippingCity: 11
        case .shippingCountry: 12
        case .shippingState: 13
        case .shippingZipCode: 14
        case .quickBooksId: 15
        case .stripeId: 16
        }
    }
}

/// A validated, normalised create-customer command (countries and US states in upper case).
/// Property names are the contract's JSON keys.
///
/// The optional fields live in one buffer, their UTF-8 one after the other, so a copy of a
/// command (the core, its candidates, creations, rows and reply values each hold one)
/// is two retains, not seventeen; the stores, the fingerprint and the reply template read the
/// bytes where they are (`withUTF8(_:_:)`). The `String` properties are for everything else.
public struct CreateCustomerCommand: Sendable, Hashable {
    public var externalId: String
    /// The optional fields' UTF-8, each value appended when it is set. The validator sets each
    /// field once; a value set again (tests, decoding) leaves its old bytes behind, unread.
    private var optionalUTF8: [UInt8] = []
    /// Where each optional field's value starts in `optionalUTF8`, by its place in
    /// `CustomerField.optionalFields`, and how many bytes it has.
    private var starts = InlineArray<16, UInt32>(repeating: 0)
    private var counts = InlineArray<16, UInt32>(repeating: 0)
    /// Bit `n` set: optional field `n` has a value (a count of 0 is then the empty string).
    private var present: UInt16 = 0

    /// A command with only its `externalId` set; does not validate.
    public init(externalId: String) {
        self.externalId = externalId
    }

    public var name: String? { get { self[.name] } set { self[.name] = newValue } }
    public var email: String? { get { self[.email] } set { self[.email] = newValue } }
    public var billingAddress1: String? { get { self[.billingAddress1] } set { self[.billingAddress1] = newValue } }
    public var billingAddress2: String? { get { self[.billingAddress2] } set { self[.billingAddress2] = newValue } }
    public var billingCity: String? { get { self[.billingCity] } set { self[.billingCity] = newValue } }
    public var billingCountry: String? { get { self[.billingCountry] } set { self[.billingCountry] = newValue } }
    public var billingState: String? { get { self[.billingState] } set { self[.billingState] = newValue } }
    public var billingZipCode: String? { get { self[.billingZipCode] } set { self[.billingZipCode] = newValue } }
    public var shippingAddress1: String? { get { self[.shippingAddress1] } set { self[.shippingAddress1] = newValue } }
    public var shippingAddress2: String? { get { self[.shippingAddress2] } set { self[.shippingAddress2] = newValue } }
    public var shippingCity: String? { get { self[.shippingCity] } set { self[.shippingCity] = newValue } }
    public var shippingCountry: String? { get { self[.shippingCountry] } set { self[.shippingCountry] = newValue } }
    public var shippingState: String? { get { self[.shippingState] } set { self[.shippingState] = newValue } }
    public var shippingZipCode: String? { get { self[.shippingZipCode] } set { self[.shippingZipCode] = newValue } }
    public var quickBooksId: String? { get { self[.quickBooksId] } set { self[.quickBooksId] = newValue } }
    public var stripeId: String? { get { self[.stripeId] } set { self[.stripeId] = newValue } }

    /// The value of `field` (for `.externalId`, never nil). Setting `.externalId` to nil is ignored.
    public subscript(field: CustomerField) -> String? {
        get {
            guard field != .externalId else { return externalId }
            return withUTF8(field) { $0.map { String(decoding: $0, as: UTF8.self) } }
        }
        set {
            guard field != .externalId else {
                if let newValue { externalId = newValue }
                return
            }
            guard var newValue else { return setOptional(field, nil) }
            newValue.withUTF8 { setOptional(field, $0) }
        }
    }

    /// Calls `body` with the UTF-8 of `field`'s value, or nil when it has none: the bytes where
    /// they are, no `String` made.
    public func withUTF8<Result>(_ field: CustomerField, _ body: (UnsafeBufferPointer<UInt8>?) throws -> Result) rethrows -> Result {
        guard field != .externalId else {
            var externalId = externalId
            return try externalId.withUTF8 { try body($0) }
        }
        let slot = field.position - 1
        guard present & (1 << slot) != 0 else { return try body(nil) }
        let range = optionalRange(slot)
        return try optionalUTF8.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[range])) }
    }

    /// Room for `count` bytes of optional values, so that setting them does not reallocate.
    mutating func reserveOptionalCapacity(_ count: Int) {
        optionalUTF8.reserveCapacity(count)
    }

    /// The byte range of optional field `slot` (its place in `optionalFields`).
    private func optionalRange(_ slot: Int) -> Range<Int> {
        Int(starts[slot])..<Int(starts[slot] + counts[slot])
    }

    /// Sets `field` to these bytes (valid UTF-8), or to nil (ignored for `.externalId`).
    mutating func set(_ field: CustomerField, utf8: UnsafeBufferPointer<UInt8>?) {
        guard field != .externalId else {
            if let utf8 { externalId = String(decoding: utf8, as: UTF8.self) }
            return
        }
        setOptional(field, utf8)
    }

    /// Sets an optional field to these bytes (appended), or to nil.
    private mutating func setOptional(_ field: CustomerField, _ value: UnsafeBufferPointer<UInt8>?) {
        let slot = field.position - 1
        guard let value else {
            present &= ~(1 << slot)
            counts[slot] = 0
            return
        }
        starts[slot] = UInt32(optionalUTF8.count)
        counts[slot] = UInt32(value.count)
        optionalUTF8.append(contentsOf: value)
        present |= 1 << slot
    }

    /// The bytes of the optional fields' values (left-behind bytes not counted).
    private var optionalByteCount: Int {
        var total: UInt32 = 0
        for slot in 0..<16 { total += counts[slot] }
        return Int(total)
    }

    /// Equal when every field's value is, whatever the buffers hold besides.
    public static func == (lhs: Self, rhs: Self) -> Bool {
        guard lhs.present == rhs.present, lhs.externalId == rhs.externalId else { return false }
        return lhs.optionalUTF8.withUnsafeBufferPointer { left in
            rhs.optionalUTF8.withUnsafeBufferPointer { right in
                (0..<16).allSatisfy { slot in
                    left[lhs.optionalRange(slot)].elementsEqual(right[rhs.optionalRange(slot)])
                }
            }
        }
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(externalId)
        hasher.combine(present)
        optionalUTF8.withUnsafeBytes { bytes in
            for slot in 0..<16 {
                hasher.combine(counts[slot])
                hasher.combine(bytes: UnsafeRawBufferPointer(rebasing: bytes[optionalRange(slot)]))
            }
        }
    }

    /// Lowercase hex SHA-256 of a canonical encoding of every field in contract order: per field a
    /// tag byte (0 = null, 1 = value) and, for a value, its UTF-8 length (4 bytes, big-endian) and
    /// bytes. Lengths make it unambiguous; the tag tells null from any string.
    public var fingerprint: String {
        // The whole encoding in one buffer, hashed in one call: an update per field and per tag
        // cost more than the hashing itself (SHA256.update has a fixed cost of ~400 instructions).
        let length = CustomerField.allCases.count + 4 * (1 + present.nonzeroBitCount) + externalId.utf8.count + optionalByteCount
        let digest = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: length) { buffer in
            var count = 0
            for field in CustomerField.allCases {
                withUTF8(field) { value in
                    guard let value else {
                        buffer[count] = 0
                        count += 1
                        return
                    }
                    let valueLength = UInt32(value.count)
                    buffer[count] = 1
                    buffer[count + 1] = UInt8(valueLength >> 24)
                    buffer[count + 2] = UInt8(valueLength >> 16 & 0xFF)
                    buffer[count + 3] = UInt8(valueLength >> 8 & 0xFF)
                    buffer[count + 4] = UInt8(valueLength & 0xFF)
                    count += 5
                    if let source = value.baseAddress, !value.isEmpty {
                        UnsafeMutableRawPointer(buffer.baseAddress! + count).copyMemory(from: source, byteCount: value.count)
                    }
                    count += value.count
                }
            }
            precondition(count == length)
            return SHA256.hash(data: UnsafeRawBufferPointer(buffer))
        }
        return digest.hexString
    }
}

extension CreateCustomerCommand: Codable, OrderedJSONObject {
    /// Decodes without validating; use `parse(body:contentType:)` for commands off the queue.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: JSONKey.self)
        externalId = try container.decode(String.self, forKey: JSONKey(CustomerField.externalId.rawValue))
        for field in CustomerField.optionalFields {
            self[field] = try container.decodeIfPresent(String.self, forKey: JSONKey(field.rawValue))
        }
    }

    /// A command body: absent fields are left out.
    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        for field in CustomerField.allCases {
            try writer.writeIfPresent(field.rawValue, self[field])
        }
    }
}
