import Crypto

/// The idempotency key of a create-customer command: lowercase hex SHA-256 of
/// `"customer.create\n" + merchantId + "\n" + externalId`.
public func idempotencyKey(merchantID: String, externalID: String) -> String {
    sha256Hex("customer.create\n" + merchantID + "\n" + externalID)
}

/// The AMQP `message_id` of a reply: the same command with the same outcome always gets the same id,
/// so a replayed reply is a duplicate of the first one to any consumer that deduplicates.
public enum ReplyMessageID {
    /// 128 bits are plenty to keep ids apart; 32 hex digits keep the header short.
    private static let length = 32

    /// A `CustomerCreated` reply: one per idempotency key.
    public static func created(idempotencyKey: String) -> String {
        String(sha256Hex(idempotencyKey + "\nCustomerCreated").prefix(length))
    }

    /// A `CustomerCreateFailed` reply: derived from the error code, the key when there is one, and
    /// the command bytes, so a different failing command under the same key gets a different id.
    public static func failed(code: ErrorCode, idempotencyKey: String?, body: [UInt8]) -> String {
        var hasher = SHA256()
        hasher.update(data: Array("CustomerCreateFailed\n\(code.rawValue)\n\(idempotencyKey ?? "")\n".utf8))
        hasher.update(data: body)
        return String(hasher.finalize().hexString.prefix(length))
    }
}

func sha256Hex(_ text: String) -> String {
    var text = text
    // Hashes the string's own UTF-8 bytes: no copy into an array first.
    return text.withUTF8 { SHA256.hash(data: $0) }.hexString
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
    public var hexString: String {
        withUnsafeBytes { digest in
            String(unsafeUninitializedCapacity: digest.count * 2) { buffer in
                lowercaseHexDigits.withUnsafeBufferPointer { digits in
                    for (index, byte) in digest.enumerated() {
                        buffer[2 * index] = digits[Int(byte >> 4)]
                        buffer[2 * index + 1] = digits[Int(byte & 0x0F)]
                    }
                }
                return digest.count * 2
            }
        }
    }
}
