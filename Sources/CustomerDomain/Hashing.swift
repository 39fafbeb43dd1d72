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
    SHA256.hash(data: Array(text.utf8)).hexString
}

extension Sequence<UInt8> {
    /// Lowercase hexadecimal, two digits a byte.
    public var hexString: String {
        let digits = Array("0123456789abcdef".utf8)
        var bytes: [UInt8] = []
        for byte in self {
            bytes.append(digits[Int(byte >> 4)])
            bytes.append(digits[Int(byte & 0x0F)])
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
