/// Checks every field of a decoded command body and collects all failures at once.
struct CommandValidator {
    static let maximumLength = 255

    private let object: RawCommandObject
    private var command = CreateCustomerCommand(externalId: "")
    private var errors: [FieldError] = []
    private var externalIdIsValid = false

    init(_ object: RawCommandObject) {
        self.object = object
    }

    consuming func validate() -> Result<CreateCustomerCommand, CommandRejection> {
        validateExternalId()
        // The optional values' bytes, reserved at once (normalising keeps their lengths): the
        // command's buffer then grows by no reallocation.
        var optionalLength = 0
        for field in CustomerField.optionalFields {
            if case .string(let value)? = object.fields[field] { optionalLength += value.count }
        }
        command.reserveOptionalCapacity(optionalLength)
        for field in CustomerField.optionalFields {
            validateOptional(field)
        }
        for key in object.unknownKeys {
            errors.append(FieldError(field: key, code: .unknownField, message: "\(key) is not a field of the create-customer command."))
        }
        guard errors.isEmpty else {
            return .failure(CommandRejection(
                code: .validationFailed,
                message: "The command is invalid: \(errors.count) field\(errors.count == 1 ? "" : "s") failed validation.",
                fields: errors,
                validExternalId: externalIdIsValid ? command.externalId : nil))
        }
        return .success(command)
    }

    private mutating func validateExternalId() {
        switch object.fields[.externalId] {
        case nil, .null?:
            fail(.externalId, .required, "is required")
        case .notString?:
            fail(.externalId, .invalidType, "must be a string")
        case .string(let text)?:
            // The one field kept as a `String`: the idempotency key, the customer's reference and
            // error messages are made of it.
            let value = text.string
            if let failure = text.withUTF8({ Self.checkLength($0, emptyHint: false) }) ?? Self.checkIdentifier(value) {
                fail(.externalId, failure.code, failure.message)
            } else {
                command.externalId = value
                externalIdIsValid = true
            }
        }
    }

    /// Checks an optional field's value where it lies (`FieldText`) and copies its bytes into
    /// the command, upper-cased where the rule normalises: no `String` is made.
    private mutating func validateOptional(_ field: CustomerField) {
        switch object.fields[field] {
        case nil, .null?:
            return
        case .notString?:
            fail(field, .invalidType, "must be a string or null")
        case .string(let text)?:
            let stateOfUS = switch field {
            case .billingState: isUS(.billingCountry)
            case .shippingState: isUS(.shippingCountry)
            default: false
            }
            switch text.withUTF8({ Self.check(field, $0, stateOfUS: stateOfUS) }) {
            case .failure(let failure):
                fail(field, failure.code, failure.message)
            case .success(let uppercased):
                text.withUTF8 { utf8 in
                    guard uppercased else { return command.set(field, utf8: utf8) }
                    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: utf8.count) { upper in
                        for index in utf8.indices { upper[index] = FieldRules.asciiUppercased(utf8[index]) }
                        command.set(field, utf8: UnsafeBufferPointer(upper))
                    }
                }
            }
        }
    }

    /// Whether the command's (already normalised) country in `field` is the US. Countries come
    /// before their states in field order; an absent or invalid country leaves the state free text.
    private func isUS(_ field: CustomerField) -> Bool {
        command.withUTF8(field) { $0.map { $0.elementsEqual("US".utf8) } ?? false }
    }

    /// Every rule of an optional field: success tells whether the value is kept upper-cased (a
    /// country, a US state), failure which rule it breaks. `stateOfUS`: the field is a state
    /// whose country is the US.
    private static func check(_ field: CustomerField, _ utf8: UnsafeBufferPointer<UInt8>, stateOfUS: Bool) -> Result<Bool, FieldFailure> {
        if let failure = checkLength(utf8, emptyHint: true) { return .failure(failure) }
        // PostgreSQL cannot store NUL (SQLSTATE 22021) and SQLite would cut the value there; no
        // field of a customer has a use for the other control characters either.
        if FieldRules.hasControlCharacters(utf8: utf8) {
            return .failure(FieldFailure(.controlCharacters, "must not contain control characters"))
        }
        switch field {
        case .email:
            return FieldRules.isPlausibleEmail(utf8: utf8) ? .success(false) : .failure(FieldFailure(
                .invalidEmail, "must be a plausible email address (one @ and a domain with a dot)"))
        case .billingZipCode, .shippingZipCode:
            return FieldRules.isZipCode(utf8: utf8) ? .success(false) : .failure(FieldFailure(
                .invalidZipCode, "must be 5 digits or 5+4 digits, e.g. 78701 or 78701-1234"))
        case .billingCountry, .shippingCountry:
            return Geography.countryCodes.contains(ignoringASCIICase: utf8) ? .success(true) : .failure(FieldFailure(
                .invalidCountry, "must be an ISO 3166-1 alpha-2 country code"))
        case .billingState, .shippingState:
            guard stateOfUS else { return .success(false) }
            let countryField = field == .billingState ? CustomerField.billingCountry : .shippingCountry
            return Geography.usStateCodes.contains(ignoringASCIICase: utf8) ? .success(true) : .failure(FieldFailure(
                .invalidState, "must be a USPS state or territory code when \(countryField.rawValue) is US"))
        default:
            return .success(false)
        }
    }

    private mutating func fail(_ field: CustomerField, _ code: FieldErrorCode, _ rule: String) {
        errors.append(FieldError(field: field.rawValue, code: code, message: "\(field.rawValue) \(rule)."))
    }

    /// `emptyHint` adds how to say "no value", for fields that may have none.
    private static func checkLength(_ utf8: UnsafeBufferPointer<UInt8>, emptyHint: Bool) -> FieldFailure? {
        if utf8.isEmpty {
            return FieldFailure(.empty, "must not be an empty string" + (emptyHint ? "; leave it out or send null for no value" : ""))
        }
        if FieldRules.length(utf8: utf8) > maximumLength {
            return FieldFailure(.tooLong, "must be at most \(maximumLength) characters")
        }
        return nil
    }

    private static func checkIdentifier(_ value: String) -> FieldFailure? {
        if FieldRules.hasSurroundingWhitespace(value) {
            return FieldFailure(.surroundingWhitespace, "must not start or end with whitespace or an invisible character (U+200B, U+FEFF)")
        }
        if FieldRules.hasControlCharacters(value) {
            return FieldFailure(.controlCharacters, "must not contain control characters")
        }
        return nil
    }
}

/// A failed rule of one field, before the field's name is attached.
struct FieldFailure: Error {
    var code: FieldErrorCode
    var message: String

    init(_ code: FieldErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }
}

/// The single-field rules of the contract.
public enum FieldRules {
    /// Characters as JSON Schema counts them for `maxLength`: Unicode code points.
    public static func length(of value: String) -> Int {
        var value = value
        return value.withUTF8 { length(utf8: $0) }
    }

    /// The code points of valid UTF-8: its bytes that are not continuation bytes (10xxxxxx).
    static func length(utf8: UnsafeBufferPointer<UInt8>) -> Int {
        // UTF-8 never has fewer bytes than code points, so short strings need no counting.
        guard utf8.count > CommandValidator.maximumLength else { return utf8.count }
        return utf8.reduce(0) { $0 + ($1 & 0xC0 == 0x80 ? 0 : 1) }
    }

    public static func hasSurroundingWhitespace(_ value: String) -> Bool {
        // Printable ASCII other than the space at both ends (most ids): no scalar to look up.
        let printable = UInt8(0x21)...UInt8(0x7E)
        if let first = value.utf8.first, let last = value.utf8.last, printable.contains(first), printable.contains(last) {
            return false
        }
        guard let first = value.unicodeScalars.first, let last = value.unicodeScalars.last else { return false }
        return isWhitespace(first) || isWhitespace(last)
    }

    /// The schema's edge set: Unicode White_Space (space separators, U+2028, U+2029, tab, line
    /// breaks, U+0085), the control characters, and two invisible ones: U+200B (zero width space)
    /// and U+FEFF (byte order mark), which would make a second, visually identical id.
    private static func isWhitespace(_ scalar: Unicode.Scalar) -> Bool {
        scalar.properties.isWhitespace || isControl(scalar) || scalar.value == 0x200B || scalar.value == 0xFEFF
    }

    /// General category Cc: U+0000–U+001F and U+007F–U+009F. Scans UTF-8 directly: U+0080–U+009F
    /// are the two-byte sequences C2 80 to C2 9F.
    public static func hasControlCharacters(_ value: String) -> Bool {
        var value = value
        return value.withUTF8 { hasControlCharacters(utf8: $0) }
    }

    /// `hasControlCharacters` over valid UTF-8: every field of every command passes here.
    static func hasControlCharacters(utf8 bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        // C1 controls are U+0080...U+009F, in UTF-8 0xC2 and a second byte up to 0x9F.
        guard ByteWords.containsControlOr(0x7F, 0xC2, in: bytes) else { return false }
        var afterC2 = false
        for byte in bytes {
            if byte < 0x20 || byte == 0x7F || (afterC2 && byte <= 0x9F) { return true }
            afterC2 = byte == 0xC2
        }
        return false
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// `^\d{5}(-\d{4})?$` with ASCII digits.
    public static func isZipCode(_ value: String) -> Bool {
        var value = value
        return value.withUTF8 { isZipCode(utf8: $0) }
    }

    static func isZipCode(utf8 bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        let isDigit = { (byte: UInt8) in (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) }
        switch bytes.count {
        case 5: return bytes.allSatisfy(isDigit)
        case 10: return bytes[5] == UInt8(ascii: "-") && bytes[..<5].allSatisfy(isDigit) && bytes[6...].allSatisfy(isDigit)
        default: return false
        }
    }

    /// One `@`, a non-empty local part, a domain with a dot that is neither its first nor its last
    /// character, and no whitespace anywhere: the schema's `^[^@\s]+@[^@\s]+\.[^@\s]+$`.
    public static func isPlausibleEmail(_ value: String) -> Bool {
        var value = value
        return value.withUTF8 { isPlausibleEmail(utf8: $0) }
    }

    static func isPlausibleEmail(utf8 bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        // One pass over the bytes (the UTF-8 view's indexes, slices and counts cost ~4,000
        // instructions an address); a non-ASCII address is then checked for Unicode whitespace.
        let verdict: Bool? = {
            var at = -1
            var ascii = true
            for index in 0..<bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "@") {
                    guard at < 0 else { return false }
                    at = index
                } else if byte == 0x20 || (0x09...0x0D).contains(byte) {
                    return false
                } else if byte >= 0x80 {
                    ascii = false
                }
            }
            // A local part, and a domain with a dot that is neither its first nor its last byte.
            guard at > 0, bytes.count - (at + 1) >= 3 else { return false }
            guard ((at + 2)..<(bytes.count - 1)).contains(where: { bytes[$0] == UInt8(ascii: ".") }) else { return false }
            return ascii ? true : nil
        }()
        return verdict ?? !String(decoding: bytes, as: UTF8.self).unicodeScalars.contains(where: \.properties.isWhitespace)
    }

    /// An ASCII letter in upper case; any other byte as it is.
    static func asciiUppercased(_ byte: UInt8) -> UInt8 {
        (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) ? byte - 0x20 : byte
    }

    /// Only ASCII is folded: `"ß".uppercased()` is `"SS"`, which must not become South Sudan.
    static func asciiUppercased(_ value: String) -> String? {
        guard value.utf8.allSatisfy({ $0 < 0x80 }) else { return nil }
        return String(decoding: value.utf8.map(asciiUppercased), as: UTF8.self)
    }
}
