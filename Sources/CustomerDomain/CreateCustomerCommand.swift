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
public struct CreateCustomerCommand: Sendable, Hashable {
    public var externalId: String
    public var name: String?
    public var email: String?
    public var billingAddress1: String?
    public var billingAddress2: String?
    public var billingCity: String?
    public var billingCountry: String?
    public var billingState: String?
    public var billingZipCode: String?
    public var shippingAddress1: String?
    public var shippingAddress2: String?
    public var shippingCity: String?
    public var shippingCountry: String?
    public var shippingState: String?
    public var shippingZipCode: String?
    public var quickBooksId: String?
    public var stripeId: String?

    /// A command with only its `externalId` set; does not validate.
    public init(externalId: String) {
        self.externalId = externalId
    }

    /// The value of `field` (for `.externalId`, never nil). Setting `.externalId` to nil is ignored.
    public subscript(field: CustomerField) -> String? {
        get {
            switch field {
            case .externalId: externalId
            case .name: name
            case .email: email
            case .billingAddress1: billingAddress1
            case .billingAddress2: billingAddress2
            case .billingCity: billingCity
            case .billingCountry: billingCountry
            case .billingState: billingState
            case .billingZipCode: billingZipCode
            case .shippingAddress1: shippingAddress1
            case .shippingAddress2: shippingAddress2
            case .shippingCity: shippingCity
            case .shippingCountry: shippingCountry
            case .shippingState: shippingState
            case .shippingZipCode: shippingZipCode
            case .quickBooksId: quickBooksId
            case .stripeId: stripeId
            }
        }
        set {
            switch field {
            case .externalId: if let newValue { externalId = newValue }
            case .name: name = newValue
            case .email: email = newValue
            case .billingAddress1: billingAddress1 = newValue
            case .billingAddress2: billingAddress2 = newValue
            case .billingCity: billingCity = newValue
            case .billingCountry: billingCountry = newValue
            case .billingState: billingState = newValue
            case .billingZipCode: billingZipCode = newValue
            case .shippingAddress1: shippingAddress1 = newValue
            case .shippingAddress2: shippingAddress2 = newValue
            case .shippingCity: shippingCity = newValue
            case .shippingCountry: shippingCountry = newValue
            case .shippingState: shippingState = newValue
            case .shippingZipCode: shippingZipCode = newValue
            case .quickBooksId: quickBooksId = newValue
            case .stripeId: stripeId = newValue
            }
        }
    }

    /// Lowercase hex SHA-256 of a canonical encoding of every field in contract order: per field a
    /// tag byte (0 = null, 1 = value) and, for a value, its UTF-8 length (4 bytes, big-endian) and
    /// bytes. Lengths make it unambiguous; the tag tells null from any string.
    public var fingerprint: String {
        // The whole encoding in one buffer, hashed in one call: an update per field and per tag
        // cost more than the hashing itself (SHA256.update has a fixed cost of ~400 instructions).
        var length = 0
        for field in CustomerField.allCases {
            length += self[field].map { 5 + $0.utf8.count } ?? 1
        }
        let digest = withUnsafeTemporaryAllocation(of: UInt8.self, capacity: length) { buffer in
            var count = 0
            for field in CustomerField.allCases {
                guard var value = self[field] else {
                    buffer[count] = 0
                    count += 1
                    continue
                }
                value.withUTF8 { utf8 in
                    let valueLength = UInt32(utf8.count)
                    buffer[count] = 1
                    buffer[count + 1] = UInt8(valueLength >> 24)
                    buffer[count + 2] = UInt8(valueLength >> 16 & 0xFF)
                    buffer[count + 3] = UInt8(valueLength >> 8 & 0xFF)
                    buffer[count + 4] = UInt8(valueLength & 0xFF)
                    count += 5
                    if let source = utf8.baseAddress, !utf8.isEmpty {
                        UnsafeMutableRawPointer(buffer.baseAddress! + count).copyMemory(from: source, byteCount: utf8.count)
                    }
                    count += utf8.count
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
