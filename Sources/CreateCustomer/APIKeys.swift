import Crypto
import CustomerDomain
import Foundation
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

public enum APIKeyType: String, Sendable, CaseIterable {
    case secret, publishable

    /// What every key of this type starts with.
    public var prefix: String { self == .secret ? "sk_" : "pk_" }
}

/// The outcome of checking an `x-api-key` header.
public enum Authentication: Sendable, Equatable {
    case merchant(id: String)
    case unauthorized(UnauthorizedReason)
    /// A valid key that may not create customers: a publishable one.
    case forbidden
}

public enum UnauthorizedReason: Sendable, Equatable {
    case missing, unknown, revoked

    /// Unknown and revoked keys get the same reply, so a reply does not tell which keys once existed.
    var rejection: CommandRejection {
        self == .missing ? .missingAPIKey : .invalidAPIKey
    }
}

/// What `merchants create` hands out; the secret parts are shown only once.
public struct MerchantCredentials: Sendable, Hashable, OrderedJSONObject {
    public var merchantId: String
    public var secretKey: String
    public var publishableKey: String

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("merchantId", merchantId)
        try writer.write("secretKey", secretKey)
        try writer.write("publishableKey", publishableKey)
    }
}

/// API keys look like `sk_<key id>_<secret>`: the key id (16 hex digits) finds the row without being
/// secret; the secret (256 random bits, 64 hex digits) is what makes the key unguessable. Only the
/// SHA-256 of the whole key is stored.
public enum APIKeys {
    static let keyIDLength = 16

    /// A new key and the row that stores it.
    static func generate(_ type: APIKeyType, merchantID: String) -> (stored: StoredAPIKey, key: String) {
        let keyID = randomHex(bytes: keyIDLength / 2)
        let key = type.prefix + keyID + "_" + randomHex(bytes: 32)
        return (StoredAPIKey(id: keyID, merchantID: merchantID, type: type, keyHash: Array(hash(key)), isRevoked: false), key)
    }

    static func hash(_ key: String) -> SHA256.Digest {
        SHA256.hash(data: Array(key.utf8))
    }

    /// The key id inside a whole key, a `sk_<id>`/`pk_<id>` prefix or a bare id, and the type its
    /// prefix names, if any.
    public static func keyID(from reference: String) -> (id: String, type: APIKeyType?)? {
        if let ascii = asciiKeyID(from: reference) { return ascii }
        return characterKeyID(from: reference)
    }

    /// `keyID(from:)` for any reference, character by character.
    static func characterKeyID(from reference: String) -> (id: String, type: APIKeyType?)? {
        var rest = Substring(reference)
        var type: APIKeyType?
        for candidate in APIKeyType.allCases where rest.hasPrefix(candidate.prefix) {
            type = candidate
            rest = rest.dropFirst(candidate.prefix.count)
        }
        let id = rest.prefix { $0 != "_" }
        guard id.count == keyIDLength, id.allSatisfy(\.isHexDigit) else { return nil }
        return (String(id), type)
    }

    /// `keyID(from:)` over the bytes of an ASCII reference (every key this service issues), which
    /// spares the per-character work of `String`; nil for anything else, which then takes the
    /// general path (the same answer for every ASCII reference: a test compares both).
    static func asciiKeyID(from reference: String) -> (id: String, type: APIKeyType?)? {
        var reference = reference
        // Over the contiguous bytes: every command's key passes here (the generic view's
        // `starts(with:)`, `prefix` and `count` cost about 9,000 instructions a command).
        return reference.withUTF8 { bytes -> (id: String, type: APIKeyType?)? in
            guard !bytes.contains(where: { $0 >= 0x80 }) else { return nil }
            var rest = bytes[...]
            var type: APIKeyType?
            for candidate in APIKeyType.allCases {
                let prefix = candidate.prefix.utf8
                guard rest.count >= prefix.count, zip(rest, prefix).allSatisfy({ $0 == $1 }) else { continue }
                type = candidate
                rest = rest.dropFirst(prefix.count)
            }
            let id = rest.prefix { $0 != UInt8(ascii: "_") }
            guard id.count == keyIDLength, id.allSatisfy(isASCIIHexDigit) else { return nil }
            return (String(decoding: UnsafeBufferPointer(rebasing: id), as: UTF8.self), type)
        }
    }

    private static func isASCIIHexDigit(_ byte: UInt8) -> Bool {
        (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte) || (UInt8(ascii: "a")...UInt8(ascii: "f")).contains(byte)
            || (UInt8(ascii: "A")...UInt8(ascii: "F")).contains(byte)
    }

    /// The rule: the stored hash must match (compared in constant time), the key must not be
    /// revoked, and only secret keys may create customers.
    static func authenticate(_ apiKey: String, stored: StoredAPIKey?) -> Authentication {
        guard let stored, stored.keyHash.count == SHA256.byteCount else { return .unauthorized(.unknown) }
        // Digest == compares in constant time.
        guard hash(apiKey) == Data(stored.keyHash) else { return .unauthorized(.unknown) }
        if stored.isRevoked { return .unauthorized(.revoked) }
        guard stored.type == .secret else { return .forbidden }
        return .merchant(id: stored.merchantID)
    }

    private static func randomHex(bytes count: Int) -> String {
        var generator = SystemRandomNumberGenerator()
        return (0..<count).map { _ in UInt8.random(in: .min ... .max, using: &generator) }.hexString
    }
}

/// Mints an identifier for a row created at the given time.
public typealias IdentifierSource = @Sendable (Timestamp) -> String

/// Identifiers the use case mints: lowercase time-ordered UUIDs (version 7, RFC 9562). New rows
/// land at the end of the id indexes instead of on random pages, which keeps inserts cheap as
/// the tables grow; the 74 random bits keep ids unguessable and unique across processes.
public func newIdentifier(now: Timestamp = Timestamp(Date())) -> String {
    let random = IdentifierRandomness.shared.next()
    let milliseconds = UInt64(max(0, now.millisecondsSince1970))
    let high = (milliseconds << 16) | 0x7000 | (random.0 & 0x0FFF)  // unix_ts_ms(48) | ver(4) | rand_a(12)
    let low = 0x8000_0000_0000_0000 | (random.1 & 0x3FFF_FFFF_FFFF_FFFF)  // var(2) | rand_b(62)
    return lowercaseUUID(high: high, low: low)
}

/// Random bits for identifiers, drawn from the C library's CSPRNG 4 KiB at a time. Debian 12's
/// glibc 2.36 makes one `getrandom` system call per `arc4random_buf` call, so drawing 16 bytes per
/// id cost two system calls per customer; a block serves 256 ids.
final class IdentifierRandomness: Sendable {
    static let shared = IdentifierRandomness()

    private struct Block {
        var words = [UInt64](repeating: 0, count: 512)
        /// The next unused word; `words.count` when the block is spent.
        var next = 512
    }

    private let block = Mutex(Block())

    /// Two fresh 64-bit random words, never handed out twice.
    func next() -> (UInt64, UInt64) {
        block.withLock { block in
            if block.next + 2 > block.words.count {
                block.words.withUnsafeMutableBytes { arc4random_buf($0.baseAddress!, $0.count) }
                block.next = 0
            }
            defer { block.next += 2 }
            return (block.words[block.next], block.words[block.next + 1])
        }
    }
}

private let hexDigits = Array("0123456789abcdef".utf8)

/// Each byte's two lowercase hex digits, the first in the low byte (stored little-endian, the
/// first digit comes first in memory).
private let hexDigitPairs: [UInt16] = (0..<256).map { byte in
    UInt16(hexDigits[byte >> 4]) | UInt16(hexDigits[byte & 0x0F]) << 8
}

/// Where each of a UUID's 16 bytes is written in its text: two digits a byte, dashes after the
/// 4th, 6th, 8th and 10th.
private let uuidDigitOffsets: [Int] = [0, 2, 4, 6, 9, 11, 14, 16, 19, 21, 24, 26, 28, 30, 32, 34]

/// `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` in lowercase, written straight into the string: a pair
/// of digits per byte, at its place (two ids a customer; a digit at a time cost ~800
/// instructions an id).
func lowercaseUUID(high: UInt64, low: UInt64) -> String {
    String(unsafeUninitializedCapacity: 36) { buffer in
        let text = UnsafeMutableRawPointer(buffer.baseAddress!)
        hexDigitPairs.withUnsafeBufferPointer { pairs in
            uuidDigitOffsets.withUnsafeBufferPointer { offsets in
                for index in 0..<16 {
                    let word = index < 8 ? high : low
                    let byte = Int(truncatingIfNeeded: (word >> (56 - 8 * UInt64(index % 8))) & 0xFF)
                    text.storeBytes(of: pairs[byte].littleEndian, toByteOffset: offsets[index], as: UInt16.self)
                }
            }
        }
        (buffer[8], buffer[13], buffer[18], buffer[23]) = (UInt8(ascii: "-"), UInt8(ascii: "-"), UInt8(ascii: "-"), UInt8(ascii: "-"))
        return 36
    }
}
