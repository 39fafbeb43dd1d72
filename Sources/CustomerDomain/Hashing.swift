import Crypto

/// The idempotency key of a create-customer command: lowercase hex SHA-256 of
/// `"customer.create\n" + merchantId + "\n" + externalId`.
public func idempotencyKey(merchantID: String, externalID: String) -> String {
    SHA256.hash(utf8Of: "customer.create\n", merchantID, "\n", externalID).hexString
}

/// The AMQP `message_id` of a reply: the same command with the same outcome always gets the same id,
/// so a replayed reply is a duplicate of the first one to any consumer that deduplicates.
public enum ReplyMessageID {
    /// 128 bits are plenty to keep ids apart; 32 hex digits keep the header short.
    private static let length = 32

    /// A `CustomerCreated` reply: one per idempotency key.
    public static func created(idempotencyKey: String) -> String {
        SHA256.hash(utf8Of: idempotencyKey, "\nCustomerCreated").hexString(prefixBytes: length / 2)
    }

    /// A `CustomerCreateFailed` reply: derived from the error code, the key when there is one, and
    /// the command bytes, so a different failing command under the same key gets a different id.
    public static func failed(code: ErrorCode, idempotencyKey: String?, body: [UInt8]) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("CustomerCreateFailed\n\(code.rawValue)\n\(idempotencyKey ?? "")\n".utf8))
        hasher.update(data: body)
        return hasher.finalize().hexString(prefixBytes: length / 2)
    }
}

private let lowercaseHexDigits: [UInt8] = Array("0123456789abcdef".utf8)

extension Sequence<UInt8> {
    /// Lowercase hexadecimal, two digits a byte.
    public var hexString: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(underestimatedCount * 2)
        for byte in self {
            bytes.append(lowercaseHexDigits[Int(byte >> 4)])
            bytes.append(lowercaseHexDigits[Int(byte & 0x0F)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

extension SHA256.Digest {
    /// Lowercase hexadecimal (64 digits), written straight into the string: idempotency keys,
    /// fingerprints and message ids take three per command, and the generic path allocated for
    /// the digest's iterator, the digit table, each growth of the buffer and the string.
    public var hexString: String { hexString(prefixBytes: SHA256.byteCount) }

    /// The first `prefixBytes` bytes in lowercase hexadecimal.
    public func hexString(prefixBytes: Int) -> String {
        withUnsafeBytes { digest in
            let count = Swift.min(prefixBytes, digest.count)
            // Indexes into the raw buffer: the enumerated slice cost ~40 instructions a byte.
            return String(unsafeUninitializedCapacity: count * 2) { buffer in
                lowercaseHexDigits.withUnsafeBufferPointer { digits in
                    for index in 0..<count {
                        let byte = digest[index]
                        buffer[2 * index] = digits[Int(byte >> 4)]
                        buffer[2 * index + 1] = digits[Int(byte & 0x0F)]
                    }
                }
                return count * 2
            }
        }
    }
}

extension SHA256 {
    /// The hash of the strings' UTF-8 one after the other, copied into one buffer on the stack and
    /// hashed in one call: `update` has a fixed cost (~400 instructions) larger than a short part's.
    public static func hash(utf8Of parts: String...) -> Digest {
        var length = 0
        for part in parts { length += part.utf8.count }
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: length) { buffer in
            var count = 0
            for var part in parts {
                part.withUTF8 { utf8 in
                    guard let source = utf8.baseAddress, !utf8.isEmpty else { return }
                    UnsafeMutableRawPointer(buffer.baseAddress! + count).copyMemory(from: source, byteCount: utf8.count)
                    count += utf8.count
                }
            }
            precondition(count == length)
            return SHA256.hash(data: UnsafeRawBufferPointer(buffer))
        }
    }

    /// Hashes the string's own UTF-8 bytes, without copying them into an array first.
    public mutating func update(utf8Of text: String) {
        var text = text
        text.withUTF8 { update(bufferPointer: UnsafeRawBufferPointer($0)) }
    }
}
