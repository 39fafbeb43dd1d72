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
            if case .string(let value)? = object.fields[field] { optionalLength += value.utf8.count }
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
        case .string(let value)?:
            if let failure = Self.checkLength(value, emptyHint: false) ?? Self.checkIdentifier(value) {
                fail(.externalId, failure.code, failure.message)
            } else {
                command.externalId = value
                externalIdIsValid = true
            }
        }
    }

    private mutating func validateOptional(_ field: CustomerField) {
        switch object.fields[field] {
        case nil, .null?:
            return
        case .notString?:
            fail(field, .invalidType, "must be a string or null")
        case .string(let value)?:
            if let failure = Self.checkLength(value, emptyHint: true) {
                return fail(field, failure.code, failure.message)
            }
            // PostgreSQL cannot store NUL (SQLSTATE 22021) and SQLite would cut the value there;
            // no field of a customer has a use for the other control characters either.
            if FieldRules.hasControlCharacters(value) {
                return fail(field, .controlCharacters, "must not contain control characters")
            }
            switch check(field, value) {
            case .success(let normalised): command[field] = normalised
            case .failure(let failure): fail(field, failure.code, failure.message)
            }
        }
    }

    /// The rule of each field beyond length; returns the normalised value.
    private func check(_ field: CustomerField, _ value: String) -> Result<String, FieldFailure> {
        switch field {
        case .email:
            FieldRules.isPlausibleEmail(value) ? .success(value) : .failure(FieldFailure(
                .invalidEmail, "must be a plausible email address (one @ and a domain with a dot)"))
        case .billingZipCode, .shippingZipCode:
            FieldRules.isZipCode(value) ? .success(value) : .failure(FieldFailure(
                .invalidZipCode, "must be 5 digits or 5+4 digits, e.g. 78701 or 78701-1234"))
        case .billingCountry, .shippingCountry:
            FieldRules.country(value).map(Result.success) ?? .failure(FieldFailure(
                .invalidCountry, "must be an ISO 3166-1 alpha-2 country code"))
        case .billingState:
            checkState(value, country: command.billingCountry, countryField: .billingCountry)
        case .shippingState:
            checkState(value, country: command.shippingCountry, countryField: .shippingCountry)
        default:
            .success(value)
        }
    }

    /// Countries come before their states in field order, so `country` is already normalised (or nil
    /// when absent or invalid; then the state is free text).
    private func checkState(_ value: String, country: String?, countryField: CustomerField) -> Result<String, FieldFailure> {
        guard country == "US" else { return .success(value) }
        return FieldRules.usState(value).map(Result.success) ?? .failure(FieldFailure(
            .invalidState, "must be a USPS state or territory code when \(countryField.rawValue) is US"))
    }

    private mutating func fail(_ field: CustomerField, _ code: FieldErrorCode, _ rule: String) {
        errors.append(FieldError(field: field.rawValue, code: code, message: "\(field.rawValue) \(rule)."))
    }

    /// `emptyHint` adds how to say "no value", for fields that may have none.
    private static func checkLength(_ value: String, emptyHint: Bool) -> FieldFailure? {
        if value.isEmpty {
            return FieldFailure(.empty, "must not be an empty string" + (emptyHint ? "; leave it out or send null for no value" : ""))
        }
        if FieldRules.length(of: value) > maximumLength {
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
        // UTF-8 never has fewer bytes than code points, so short strings need no counting.
        value.utf8.count <= CommandValidator.maximumLength ? value.utf8.count : value.unicodeScalars.count
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
        // Over the contiguous bytes: every field of every command passes here.
        return value.withUTF8 { bytes in
            // C1 controls are U+0080...U+009F, in UTF-8 0xC2 and a second byte up to 0x9F.
            guard ByteWords.containsControlOr(0x7F, 0xC2, in: bytes) else { return false }
            var afterC2 = false
            for byte in bytes {
                if byte < 0x20 || byte == 0x7F || (afterC2 && byte <= 0x9F) { return true }
                afterC2 = byte == 0xC2
            }
            return false
        }
    }

    private static func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }

    /// `^\d{5}(-\d{4})?$` with ASCII digits.
    public static func isZipCode(_ value: String) -> Bool {
        let bytes = Array(value.utf8)
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
        // One pass over the bytes (the UTF-8 view's indexes, slices and counts cost ~4,000
        // instructions an address); a non-ASCII address is then checked for Unicode whitespace.
        var value = value
        let verdict: Bool? = value.withUTF8 { bytes in
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
        }
        return verdict ?? !value.unicodeScalars.contains(where: \.properties.isWhitespace)
    }

    /// The upper-cased code when `value` is an ISO 3166-1 alpha-2 code in any case.
    public static func country(_ value: String) -> String? {
        asciiUppercased(value).flatMap { Geography.countryCodes.contains($0) ? $0 : nil }
    }

    /// The upper-cased code when `value` is a USPS state or territory code in any case.
    public static func usState(_ value: String) -> String? {
        asciiUppercased(value).flatMap { Geography.usStateCodes.contains($0) ? $0 : nil }
    }

    /// Only ASCII is folded: `"ß".uppercased()` is `"SS"`, which must not become South Sudan.
    /// Byte by byte (`uppercased()` goes through Unicode's case mappings, ~400 instructions).
    static func asciiUppercased(_ value: String) -> String? {
        var value = value
        return value.withUTF8 { bytes -> String? in
            var hasLowercase = false
            for byte in bytes {
                guard byte < 0x80 else { return nil }
                if (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) { hasLowercase = true }
            }
            guard hasLowercase else { return String(decoding: bytes, as: UTF8.self) }
            return String(unsafeUninitializedCapacity: bytes.count) { buffer in
                for (index, byte) in bytes.enumerated() {
                    buffer[index] = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) ? byte - 0x20 : byte
                }
                return bytes.count
            }
        }
    }
}
