import Foundation

extension CreateCustomerCommand {
    /// The largest accepted body: 64 KiB.
    public static let maximumBodySize = 64 * 1024

    /// Turns a raw command body into a validated, normalised command, or says why not.
    ///
    /// Checks run in this order and the first failing check decides the code: the content type
    /// (`application/json`, parameters allowed), the size, UTF-8 and JSON object syntax, then every
    /// field at once.
    public static func parse(body: [UInt8], contentType: String?) -> Result<CreateCustomerCommand, CommandRejection> {
        if let rejection = checkContentType(contentType) { return .failure(rejection) }
        guard body.count <= maximumBodySize else {
            return .failure(CommandRejection(
                code: .messageTooLarge,
                message: "The message body is \(body.count) bytes; the limit is \(maximumBodySize)."))
        }
        guard isValidUTF8(body) else {
            return .failure(CommandRejection(code: .malformedMessage, message: "The message body is not valid UTF-8."))
        }
        switch RawCommandObject.decode(body) {
        case .success(let object): return CommandValidator(object).validate()
        case .failure(let rejection): return .failure(rejection)
        }
    }

    /// Nil when the content type is `application/json`, optionally with a UTF-8 charset.
    static func checkContentType(_ contentType: String?) -> CommandRejection? {
        guard let contentType else {
            return CommandRejection(
                code: .unsupportedContentType, message: "The content type is missing; send application/json.")
        }
        // What nearly every command carries, answered without splitting and lowercasing.
        if contentType.utf8.elementsEqual("application/json".utf8) { return nil }
        var parts = contentType.split(separator: ";", omittingEmptySubsequences: false).makeIterator()
        let mediaType = parts.next().map(trimmedLowercase) ?? ""
        var charsetIsUTF8 = true
        while let parameter = parts.next() {
            let pair = parameter.split(separator: "=", maxSplits: 1)
            guard pair.count == 2, trimmedLowercase(pair[0]) == "charset" else { continue }
            let charset = trimmedLowercase(pair[1]).trimmingCharacters(in: CharacterSet(charactersIn: "\""))
            charsetIsUTF8 = charset == "utf-8" || charset == "utf8"
        }
        guard mediaType == "application/json", charsetIsUTF8 else {
            return CommandRejection(
                code: .unsupportedContentType,
                message: "Content type \(contentType) is not supported; send application/json.")
        }
        return nil
    }

    private static func trimmedLowercase(_ text: Substring) -> String {
        text.trimmingCharacters(in: .whitespaces).lowercased()
    }

    /// Swift's UTF-8 decoder rejects overlong forms, surrogates and truncated sequences, which a JSON
    /// parser may let through; pure ASCII, the common case, skips decoding.
    static func isValidUTF8(_ bytes: [UInt8]) -> Bool {
        if bytes.allSatisfy({ $0 < 0x80 }) { return true }
        var decoder = UTF8()
        var iterator = bytes.makeIterator()
        while true {
            switch decoder.decode(&iterator) {
            case .scalarValue: continue
            case .emptyInput: return true
            case .error: return false
            }
        }
    }
}

/// One key's value as the validator needs to see it.
enum RawFieldValue: Sendable, Equatable {
    case null
    case string(FieldText)
    /// A number, boolean, array or object.
    case notString
}

/// A known field's string value as UTF-8: a range of the command's body when the JSON string has
/// no escape (holding the body, not a copy), else its unescaped bytes. The validator reads the
/// bytes and the command takes them, so no `String` is made per field. Equal when the bytes are.
struct FieldText: Sendable, Equatable, ExpressibleByStringLiteral {
    private let storage: [UInt8]
    private let range: Range<Int>

    init(_ storage: [UInt8], _ range: Range<Int>) {
        self.storage = storage
        self.range = range
    }

    init(_ text: String) {
        storage = Array(text.utf8)
        range = storage.indices
    }

    init(stringLiteral text: String) { self.init(text) }

    var count: Int { range.count }

    func withUTF8<Result>(_ body: (UnsafeBufferPointer<UInt8>) throws -> Result) rethrows -> Result {
        try storage.withUnsafeBufferPointer { try body(UnsafeBufferPointer(rebasing: $0[range])) }
    }

    var string: String { withUTF8 { String(decoding: $0, as: UTF8.self) } }

    static func == (lhs: Self, rhs: Self) -> Bool {
        lhs.storage[lhs.range].elementsEqual(rhs.storage[rhs.range])
    }
}

/// The known fields' values of one command, in a fixed array by `CustomerField.position`. Not a
/// dictionary: a `CustomerField` key hashes its `String` raw value, and the scanner's inserts, the
/// dictionary's growth and the validator's lookups came to about 12,000 instructions a command.
struct RawFields: Equatable, ExpressibleByDictionaryLiteral {
    private var values = [RawFieldValue?](repeating: nil, count: CustomerField.allCases.count)

    init() {}

    init(dictionaryLiteral elements: (CustomerField, RawFieldValue)...) {
        for (field, value) in elements { self[field] = value }
    }

    subscript(field: CustomerField) -> RawFieldValue? {
        get { values[field.position] }
        set { values[field.position] = newValue }
    }
}

/// The keys of a command body, sorted into known fields and unknown keys.
struct RawCommandObject: Equatable {
    var fields = RawFields()
    /// Sorted.
    var unknownKeys: [String] = []

    static func decode(_ body: [UInt8]) -> Result<RawCommandObject, CommandRejection> {
        guard !body.isEmpty else { return .failure(malformed("The message body is empty.")) }
        switch CommandJSONScanner.scan(body) {
        case .success(let object): return .success(object)
        case .failure(.notAnObject): return .failure(malformed("The message body must be a JSON object."))
        case .failure(.invalidJSON): return .failure(malformed("The message body is not valid JSON."))
        case .failure(.duplicateKey(let key)):
            return .failure(malformed("The message body is not strict JSON: the key \"\(shown(key))\" appears more than once in one object."))
        case .failure(.trailingComma):
            return .failure(malformed("The message body is not strict JSON: a comma comes before a closing } or ]."))
        }
    }

    /// A key as quoted in an error: at most 100 characters, control characters escaped.
    private static func shown(_ key: String) -> String {
        var text = ""
        for scalar in key.unicodeScalars.prefix(100) {
            text += scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value) ? "\\u{\(String(scalar.value, radix: 16))}" : String(scalar)
        }
        return key.unicodeScalars.count > 100 ? text + "…" : text
    }

    private static func malformed(_ message: String) -> CommandRejection {
        CommandRejection(code: .malformedMessage, message: message)
    }
}
