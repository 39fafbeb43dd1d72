/// A value of a `CustomerCreated` reply that differs from one command to the next, where every
/// other byte of the reply is fixed by its merchant and its default-plan decision.
enum CreatedReplySlot: Sendable, Hashable {
    case idempotencyKey
    case customerID
    case subscriptionID
    /// The reply's time: the customer's and the subscription's `createdAt` and `updatedAt`.
    case now
    case startDate
    case endDate
    case field(CustomerField)

    /// The slot a reply's value is, by where `CustomerCreated.writeFields` writes it: `path` is the
    /// keys of the enclosing objects (an array's elements under the array's key). Every other value
    /// is the same for every reply of one template (the merchant, the plan, the decision).
    init?(path: [String], key: String) {
        switch path {
        case []:
            guard key == "idempotencyKey" else { return nil }
            self = .idempotencyKey
        case ["customer"]:
            switch key {
            case "id": self = .customerID
            case "createdAt", "updatedAt": self = .now
            default:
                guard let field = CustomerField(rawValue: key) else { return nil }
                self = .field(field)
            }
        case ["customer", "activeSubscriptions"], ["customer", "upcomingSubscriptions"]:
            switch key {
            case "id": self = .subscriptionID
            case "customerId": self = .customerID
            case "createdAt", "updatedAt": self = .now
            case "startDate": self = .startDate
            case "endDate": self = .endDate
            default: return nil
            }
        default: return nil
        }
    }
}

/// While a `JSONBytesWriter` records a template: where it is and what it has cut so far.
struct TemplateRecording {
    var path: [String] = []
    var literals: [(json: [UInt8], compact: [UInt8])] = []
    var slots: [CreatedReplySlot] = []
}

/// The values a `CustomerCreatedTemplate` fills in: what differs between two replies of one
/// merchant and one default-plan decision.
public struct CreatedReplyValues: Sendable {
    public var idempotencyKey: String
    public var customerID: String
    /// Nil when the decision creates no subscription (the template then has no such slot).
    public var subscriptionID: String?
    public var now: Timestamp
    public var startDate: Timestamp?
    public var endDate: Timestamp?
    public var attributes: CreateCustomerCommand

    public init(idempotencyKey: String, customerID: String, subscription: Subscription?, now: Timestamp,
                attributes: CreateCustomerCommand) {
        self.idempotencyKey = idempotencyKey
        self.customerID = customerID
        self.subscriptionID = subscription?.id
        self.now = now
        self.startDate = subscription?.startDate
        self.endDate = subscription?.endDate
        self.attributes = attributes
    }
}

/// A `CustomerCreated` reply written once, its fixed parts kept as bytes (keys, the merchant, the
/// plan, the decision, in both the published and the stored form) and its `CreatedReplySlot`s
/// left open; `render` writes a reply of the same merchant and decision by copying the fixed
/// parts and writing only the slots' values. Recorded by the same `writeFields` the
/// `JSONBytesWriter` uses, so the key order is declared once; a test holds `render` to the
/// writer's bytes, both forms, for every reply shape of the contract and generated commands.
public struct CustomerCreatedTemplate: Sendable {
    /// The fixed bytes before each slot, and after the last: `literals.count == slots.count + 1`.
    private let literals: [[UInt8]]
    /// The same in the stored form (`JSONPhraseTokens`); the first starts with its prefix.
    private let compactLiterals: [[UInt8]]
    private let slots: [CreatedReplySlot]
    private let nullToken: [UInt8]
    private let fixedLength: Int
    private let fixedCompactLength: Int

    /// Records `prototype`'s fixed parts; its slots' values are not kept.
    public init(_ prototype: CustomerCreated, tokens: JSONPhraseTokens) {
        var writer = JSONBytesWriter(compactingWith: tokens)
        writer.recording = TemplateRecording()
        writer.writeObject(prototype)
        let last = writer.takeLiteral()
        let recording = writer.recording!
        literals = recording.literals.map(\.json) + [last.json]
        compactLiterals = recording.literals.map(\.compact) + [last.compact]
        slots = recording.slots
        nullToken = tokens.null
        fixedLength = literals.reduce(0) { $0 + $1.count }
        fixedCompactLength = compactLiterals.reduce(0) { $0 + $1.count }
    }

    /// The reply and its stored form: `CustomerCreated.canonicalJSON(compactingWith:)` of the
    /// reply these values make with the prototype's merchant and decision.
    public func render(_ values: CreatedReplyValues) -> (json: [UInt8], compact: [UInt8]) {
        // The reply's time appears four to six times: its text is written once.
        let now = Self.quoted(values.now)
        let startDate = values.startDate.map { $0 == values.now ? now : Self.quoted($0) }
        let endDate = values.endDate.map { $0 == values.now ? now : Self.quoted($0) }
        // The exact lengths first: each array is allocated once, at its size. Which string values
        // need escaping is noted on the way (a bit per slot), so the writing pass does not look
        // for escapes again: a value with none is copied as it is.
        var valueLength = 0
        var nulls = 0
        var escapedSlots: UInt64 = 0
        func add(_ utf8: UnsafeBufferPointer<UInt8>?, slot: Int) {
            guard let utf8 else { return nulls += 1 }
            let overhead = JSONBytesWriter.escapeOverhead(utf8)
            valueLength += utf8.count + 2 + overhead
            if overhead > 0 { escapedSlots |= Self.bit(slot) }
        }
        func add(_ string: String?, slot: Int) {
            guard var string else { return nulls += 1 }
            string.withUTF8 { add($0, slot: slot) }
        }
        func add(_ time: [UInt8]?) {
            if let time { valueLength += time.count } else { nulls += 1 }
        }
        for (index, slot) in slots.enumerated() {
            switch slot {
            case .idempotencyKey: add(values.idempotencyKey, slot: index)
            case .customerID: add(values.customerID, slot: index)
            case .subscriptionID: add(values.subscriptionID, slot: index)
            case .now: add(now)
            case .startDate: add(startDate)
            case .endDate: add(endDate)
            case .field(let field): values.attributes.withUTF8(field) { add($0, slot: index) }
            }
        }
        let jsonLength = fixedLength + valueLength + nulls * ByteSink.null.count
        let compactLength = fixedCompactLength + valueLength + nulls * nullToken.count
        var compact: [UInt8] = []
        let json = [UInt8](unsafeUninitializedCapacity: jsonLength) { jsonBuffer, jsonCount in
            compact = [UInt8](unsafeUninitializedCapacity: compactLength) { compactBuffer, compactCount in
                var sink = ByteSink(json: jsonBuffer, compact: compactBuffer, null: nullToken)
                for index in slots.indices {
                    sink.write(literals[index], compactLiterals[index])
                    let escaped = escapedSlots & Self.bit(index) != 0
                    switch slots[index] {
                    case .idempotencyKey: sink.write(values.idempotencyKey, escaped: escaped)
                    case .customerID: sink.write(values.customerID, escaped: escaped)
                    case .subscriptionID: sink.write(values.subscriptionID, escaped: escaped)
                    case .now: sink.write(now)
                    case .startDate: sink.write(startDate)
                    case .endDate: sink.write(endDate)
                    case .field(let field): values.attributes.withUTF8(field) { sink.write(utf8: $0, escaped: escaped) }
                    }
                }
                sink.write(literals[slots.count], compactLiterals[slots.count])
                // The lengths counted are the lengths written.
                precondition(sink.jsonCount == jsonLength && sink.compactCount == compactLength)
                jsonCount = jsonLength
                compactCount = compactLength
            }
        }
        return (json, compact)
    }

    /// The bit of `slot` in a mask of slots; a template of more than 64 slots has its later slots
    /// share the last bit (a value of theirs without escapes then only goes the escaping way).
    private static func bit(_ slot: Int) -> UInt64 {
        1 << UInt64(min(slot, 63))
    }

    /// The time as the writer writes a `Timestamp`: quoted ISO 8601.
    private static func quoted(_ time: Timestamp) -> [UInt8] {
        // Reserved before the first byte: an array made of a literal, then reserved, is two allocations.
        var text: [UInt8] = []
        text.reserveCapacity(32)
        text.append(UInt8(ascii: "\""))
        time.appendISO8601(to: &text)
        text.append(UInt8(ascii: "\""))
        return text
    }
}

/// Writes a reply and its stored form side by side into buffers of their exact lengths
/// (`render` counts them first, and checks them after).
private struct ByteSink {
    let json: UnsafeMutableBufferPointer<UInt8>
    let compact: UnsafeMutableBufferPointer<UInt8>
    let nullToken: [UInt8]
    private(set) var jsonCount = 0
    private(set) var compactCount = 0

    static let null: [UInt8] = Array("null".utf8)

    init(json: UnsafeMutableBufferPointer<UInt8>, compact: UnsafeMutableBufferPointer<UInt8>, null: [UInt8]) {
        self.json = json
        self.compact = compact
        nullToken = null
    }

    /// A literal, in each form.
    mutating func write(_ literal: [UInt8], _ compactLiteral: [UInt8]) {
        literal.withUnsafeBufferPointer { Self.copy($0, to: json, at: &jsonCount) }
        compactLiteral.withUnsafeBufferPointer { Self.copy($0, to: compact, at: &compactCount) }
    }

    /// A value written as it is (a quoted time), or null.
    mutating func write(_ text: [UInt8]?) {
        guard let text else { return writeNull() }
        text.withUnsafeBufferPointer { writeValue($0) }
    }

    /// A string value as `JSONBytesWriter.appendString` writes it, or null; `escaped`: whether
    /// it holds a byte JSON escapes (as the sizing pass found).
    mutating func write(_ string: String?, escaped: Bool) {
        guard var string else { return writeNull() }
        string.withUTF8 { write(utf8: $0, escaped: escaped) }
    }

    /// A string value given as its UTF-8, as `JSONBytesWriter.appendString` writes it, or null.
    mutating func write(utf8: UnsafeBufferPointer<UInt8>?, escaped: Bool) {
        guard let utf8 else { return writeNull() }
        guard !escaped else {
            // Rare (quotes, backslashes, control characters): the writer's own escaping.
            var escaped: [UInt8] = []
            JSONBytesWriter.appendString(String(decoding: utf8, as: UTF8.self), to: &escaped)
            return escaped.withUnsafeBufferPointer { writeValue($0) }
        }
        // Quoted into the reply, then the same bytes into the stored form: two copies and two
        // quotes through raw pointers (the slices' bounds checks cost ~100 instructions a value).
        let length = utf8.count + 2
        precondition(jsonCount + length <= json.count && compactCount + length <= compact.count)
        let quoted = UnsafeMutableRawPointer(json.baseAddress! + jsonCount)
        quoted.storeBytes(of: UInt8(ascii: "\""), as: UInt8.self)
        if let source = utf8.baseAddress { (quoted + 1).copyMemory(from: source, byteCount: utf8.count) }
        quoted.storeBytes(of: UInt8(ascii: "\""), toByteOffset: length - 1, as: UInt8.self)
        UnsafeMutableRawPointer(compact.baseAddress! + compactCount).copyMemory(from: quoted, byteCount: length)
        jsonCount += length
        compactCount += length
    }

    /// A value's bytes are the same in both forms (tokens stand only for phrases).
    private mutating func writeValue(_ bytes: UnsafeBufferPointer<UInt8>) {
        Self.copy(bytes, to: json, at: &jsonCount)
        Self.copy(bytes, to: compact, at: &compactCount)
    }

    private mutating func writeNull() {
        Self.null.withUnsafeBufferPointer { Self.copy($0, to: json, at: &jsonCount) }
        nullToken.withUnsafeBufferPointer { Self.copy($0, to: compact, at: &compactCount) }
    }

    private static func copy(_ bytes: UnsafeBufferPointer<UInt8>, to buffer: UnsafeMutableBufferPointer<UInt8>, at count: inout Int) {
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        precondition(count + bytes.count <= buffer.count)
        // A memcpy (`update(from:count:)` copied element by element here).
        UnsafeMutableRawPointer(buffer.baseAddress! + count).copyMemory(from: source, byteCount: bytes.count)
        count += bytes.count
    }

}
