import CustomerDomain
import Glibc

/// How a record's reply is stored (`processed_requests.stored_reply`): the published bytes with the
/// contract's key phrases (`"billingAddress1":`) and `null`, `true`, `false` written as tokens of
/// one or two bytes. A reply's JSON never holds a byte below 0x20 (JSON escapes them), so a token
/// can stand anywhere and expands back to exactly the bytes it replaced: the replay is the
/// published reply byte for byte, by construction. A created reply shrinks from about 1.6 KB to
/// about 0.9 KB, and the record's B-tree with it (the reply was 60 % of the bytes written per
/// customer).
///
/// Stored forms, told apart by their first bytes:
/// - anything not starting with 0x00: the reply itself (every record written before the tokens);
/// - 0x00 0x00, then the reply itself (a body that holds a byte below 0x20 is kept as it is);
/// - 0x00 0x01, then the tokens of `phrasesV1` and the other bytes as they are.
///
/// `phrasesV1` is part of the stored format: never edit it; a new table is a new version.
public enum StoredReplyBody {
    /// Version 1's phrases: the first 30 are the tokens 0x01–0x1E, the rest 0x1F then their index.
    static let phrasesV1: [String] = [
        "null", #""idempotencyKey":"#, #""conditionalBillableAccess":"#, #""upcomingSubscriptions":"#,
        #""activeSubscriptions":"#, #""customPricingUnits":"#, #""isEligibleForTrial":"#, #""merchantId":"#,
        #""shippingAddress1":"#, #""shippingAddress2":"#, #""createdAt":"#, #""updatedAt":"#,
        #""billingAddress1":"#, #""billingAddress2":"#, #""shippingCountry":"#, #""shippingZipCode":"#,
        #""billingCountry":"#, #""billingZipCode":"#, #""shippingState":"#, #""billingState":"#,
        #""shippingCity":"#, #""quickBooksId":"#, #""privatePlans":"#, #""defaultPlan":"#,
        #""billingCity":"#, #""planId":"#, #""externalId":"#, #""availableCountries":"#, #""customer":"#,
        #""stripeId":"#,
        // Two bytes each from here (0x1F, then the index).
        #""existingCustomerId":"#, #""message":"#, #""code":"#, #""type":"#, #""name":"#, #""fields":"#,
        #""status":"#, #""paymentGateway":"#, #""billingCadence":"#, #""outcome":"#, #""id":"#,
        #""availableFrom":"#, #""error":"#, #""field":"#, #""reason":"#, #""description":"#, #""email":"#,
        #""customerId":"#, #""startDate":"#, #""trialDays":"#, #""isPrivate":"#, #""currency":"#,
        #""isTrial":"#, #""endDate":"#, "false", #""price":"#, #""plan":"#, "true",
    ]

    private static let singleByteTokens = 30
    private static let extendedToken: UInt8 = 0x1F
    private static let table = PhraseTable(phrasesV1)

    /// Version 1's tokens for a `JSONBytesWriter` that writes a reply's stored form as it writes
    /// the reply (`CustomerCreated.canonicalJSON(compactingWith:)`), instead of `encode` reading
    /// the reply again: a key's phrase and `null`, `true`, `false` in a value's place become their
    /// tokens. It tokenizes only where the writer writes a phrase (a value's text stays as it is,
    /// where `encode` may also replace a `null` inside a string), and `decode` reads either back
    /// to the reply's exact bytes.
    public static let phraseTokens: JSONPhraseTokens = {
        func token(_ index: Int) -> [UInt8] { index < singleByteTokens ? [UInt8(index + 1)] : [extendedToken, UInt8(index)] }
        let keys = phrasesV1.enumerated().filter { $0.element.hasPrefix("\"") && $0.element.hasSuffix("\":") }
            .map { (name: String($0.element.dropFirst().dropLast(2)), token: token($0.offset)) }
        func literal(_ text: String) -> [UInt8] { token(phrasesV1.firstIndex(of: text)!) }
        return JSONPhraseTokens(prefix: [0x00, 0x01], keys: keys, null: literal("null"), true: literal("true"), false: literal("false"))
    }()

    /// The stored form of `reply`.
    public static func encode(_ reply: [UInt8]) -> [UInt8] {
        let table = table
        var complete = true
        // Never longer than the reply and its two marker bytes: a token is shorter than its phrase.
        let stored = [UInt8](unsafeUninitializedCapacity: reply.count + 2) { output, initialized in
            let count = reply.withUnsafeBufferPointer { bytes in
                table.bytes.withUnsafeBufferPointer { phrases in tokens(of: bytes, into: output, table: table, phrases: phrases) }
            }
            complete = count != nil
            initialized = count ?? 0
        }
        return complete ? stored : [0x00, 0x00] + reply
    }

    /// Writes the compact form of `reply` into `output` and returns its length, or nil when
    /// `reply` holds a byte below 0x20.
    private static func tokens(of reply: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>,
                               table: PhraseTable, phrases: UnsafeBufferPointer<UInt8>) -> Int? {
        output[0] = 0x00
        output[1] = 0x01
        var count = 2
        var position = 0
        // Phrases are tried where the canonical JSON writes keys and literals: after `{`, `,`,
        // `:` or `[`, and after a key (elsewhere a match would be just as reversible, only rarer).
        var phraseMayStart = false
        while position < reply.count {
            if phraseMayStart, let index = table.phrase(at: position, in: reply, phrases: phrases) {
                if index < singleByteTokens {
                    output[count] = UInt8(index + 1)
                    count += 1
                } else {
                    output[count] = extendedToken
                    output[count + 1] = UInt8(index)
                    count += 2
                }
                let end = table.starts[index + 1]
                position += end - table.starts[index]
                phraseMayStart = phrases[end - 1] == UInt8(ascii: ":")
                continue
            }
            let byte = reply[position]
            let kind = table.kinds[Int(byte)]
            guard kind != .control else { return nil }
            output[count] = byte
            count += 1
            position += 1
            phraseMayStart = kind == .beforePhrase
        }
        return count
    }

    /// The reply `stored` stands for; throws when it is no form this worker writes.
    public static func decode(_ stored: [UInt8]) throws(UndecodableStoredValue) -> [UInt8] {
        guard stored.first == 0x00 else { return stored }
        guard stored.count >= 2 else { throw undecodable("a marker without a version") }
        switch stored[1] {
        case 0x00: return Array(stored.dropFirst(2))
        case 0x01: break
        default: throw undecodable("format version \(stored[1])")
        }
        let table = table
        // Two passes: the reply's length (and every token checked), then its bytes.
        var length = 0
        var position = 2
        while position < stored.count {
            let byte = stored[position]
            switch byte {
            case 0x20...:
                length += 1
                position += 1
            case 0x01..<extendedToken:
                length += table.length(Int(byte) - 1)
                position += 1
            case extendedToken:
                guard position + 1 < stored.count, Int(stored[position + 1]) >= singleByteTokens,
                      Int(stored[position + 1]) < table.count
                else { throw undecodable("an unknown token at byte \(position)") }
                length += table.length(Int(stored[position + 1]))
                position += 2
            default: throw undecodable("a zero byte at byte \(position)")
            }
        }
        return [UInt8](unsafeUninitializedCapacity: length) { output, initialized in
            stored.withUnsafeBufferPointer { bytes in
                table.bytes.withUnsafeBufferPointer { phrases in expand(bytes, into: output, table: table, phrases: phrases) }
            }
            initialized = length
        }
    }

    /// Writes the reply of a checked compact form into `output`, which has its exact length.
    private static func expand(_ stored: UnsafeBufferPointer<UInt8>, into output: UnsafeMutableBufferPointer<UInt8>,
                               table: PhraseTable, phrases: UnsafeBufferPointer<UInt8>) {
        var count = 0
        var position = 2
        while position < stored.count {
            let byte = stored[position]
            let index: Int
            if byte >= 0x20 {
                output[count] = byte
                count += 1
                position += 1
                continue
            } else if byte == extendedToken {
                index = Int(stored[position + 1])
                position += 2
            } else {
                index = Int(byte) - 1
                position += 1
            }
            let start = table.starts[index]
            let length = table.starts[index + 1] - start
            UnsafeMutableRawPointer(output.baseAddress! + count).copyMemory(from: phrases.baseAddress! + start, byteCount: length)
            count += length
        }
    }

    private static func undecodable(_ what: String) -> UndecodableStoredValue {
        UndecodableStoredValue(table: "processed_requests", column: "stored_reply", value: "a stored reply with \(what)")
    }
}

/// The phrases as one run of bytes, and the key phrases (`"…":`) found by the length and the first
/// byte of their key: a key is matched by comparing bytes with the one or two candidates that
/// share both, without hashing.
private struct PhraseTable: Sendable {
    /// Every phrase, one after the other: phrase `i` is `bytes[starts[i]..<starts[i + 1]]`.
    let bytes: [UInt8]
    let starts: [Int]
    /// By `length * 128 + first byte` of a key: its phrase's index + 1, or 0.
    private let firstKey: [Int]
    /// After a phrase's index: the next key with the same length and first byte, + 1, or 0.
    private let nextKey: [Int]
    private let null: Int, `true`: Int, `false`: Int
    /// What each byte value is to the encoder: one lookup per byte instead of five comparisons.
    let kinds: [ByteKind]

    enum ByteKind: UInt8, Sendable {
        case plain
        /// `{`, `,`, `:` and `[`: a key or a literal may follow.
        case beforePhrase
        /// Below 0x20: a reply holding one is stored as it is.
        case control
    }
    private static let longestKey = 31

    var count: Int { starts.count - 1 }
    func length(_ index: Int) -> Int { starts[index + 1] - starts[index] }

    init(_ phrases: [String]) {
        var bytes: [UInt8] = []
        var starts: [Int] = []
        var firstKey = [Int](repeating: 0, count: (Self.longestKey + 1) * 128)
        var nextKey = [Int](repeating: 0, count: phrases.count)
        for (index, phrase) in phrases.enumerated() {
            starts.append(bytes.count)
            let utf8 = Array(phrase.utf8)
            // Longer than any token (two bytes at most), so the encoder's output never outgrows the reply.
            precondition(utf8.count >= 3)
            bytes += utf8
            guard utf8.first == UInt8(ascii: "\"") else { continue }
            let key = utf8.dropFirst().dropLast(2)
            precondition(key.count <= Self.longestKey && key.allSatisfy { $0 < 128 && $0 != UInt8(ascii: "\"") })
            let slot = key.count * 128 + Int(key.first!)
            nextKey[index] = firstKey[slot]
            firstKey[slot] = index + 1
        }
        starts.append(bytes.count)
        self.bytes = bytes
        self.starts = starts
        self.firstKey = firstKey
        self.nextKey = nextKey
        null = phrases.firstIndex(of: "null")!
        `true` = phrases.firstIndex(of: "true")!
        `false` = phrases.firstIndex(of: "false")!
        kinds = (0...255).map { byte in
            switch UInt8(byte) {
            case ..<0x20: .control
            case UInt8(ascii: "{"), UInt8(ascii: ","), UInt8(ascii: ":"), UInt8(ascii: "["): .beforePhrase
            default: .plain
            }
        }
    }

    /// The index of the phrase that starts at `position`, if one does.
    func phrase(at position: Int, in text: UnsafeBufferPointer<UInt8>, phrases: UnsafeBufferPointer<UInt8>) -> Int? {
        switch text[position] {
        case UInt8(ascii: "\""):
            let keyStart = position + 1
            var end = keyStart
            while end < text.count, end - keyStart <= Self.longestKey, text[end] != UInt8(ascii: "\"") { end += 1 }
            let length = end - keyStart
            guard length > 0, length <= Self.longestKey, end + 1 < text.count, text[end] == UInt8(ascii: "\""),
                  text[end + 1] == UInt8(ascii: ":"), text[keyStart] < 128 else { return nil }
            var candidate = firstKey[length * 128 + Int(text[keyStart])]
            while candidate != 0 {
                if matches(candidate - 1, at: position, in: text, phrases: phrases) { return candidate - 1 }
                candidate = nextKey[candidate - 1]
            }
            return nil
        case UInt8(ascii: "n"): return matches(null, at: position, in: text, phrases: phrases) ? null : nil
        case UInt8(ascii: "t"): return matches(`true`, at: position, in: text, phrases: phrases) ? `true` : nil
        case UInt8(ascii: "f"): return matches(`false`, at: position, in: text, phrases: phrases) ? `false` : nil
        default: return nil
        }
    }

    private func matches(_ index: Int, at position: Int, in text: UnsafeBufferPointer<UInt8>, phrases: UnsafeBufferPointer<UInt8>) -> Bool {
        let start = starts[index]
        let length = starts[index + 1] - start
        guard text.count - position >= length else { return false }
        return memcmp(text.baseAddress! + position, phrases.baseAddress! + start, length) == 0
    }
}
