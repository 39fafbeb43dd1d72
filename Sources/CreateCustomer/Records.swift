import CustomerDomain

/// One command as it came off the queue.
public struct IncomingCommand: Sendable {
    /// The `x-api-key` header.
    public var apiKey: String?
    /// The AMQP `content_type` property.
    public var contentType: String?
    public var body: [UInt8]
    /// The headers nest too deep to be read (so there is no API key either): `malformed_message`.
    public var headersTooDeep: Bool

    public init(apiKey: String?, contentType: String?, body: [UInt8], headersTooDeep: Bool = false) {
        self.apiKey = apiKey
        self.contentType = contentType
        self.body = body
        self.headersTooDeep = headersTooDeep
    }
}

public enum ReplyType: String, Sendable {
    case customerCreated = "CustomerCreated"
    case customerCreateFailed = "CustomerCreateFailed"
}

/// The reply to publish for one command.
public struct ReplyRecord: Sendable, Equatable {
    public var type: ReplyType
    public var idempotencyKey: String?
    /// Deterministic per idempotency key and outcome; a replay carries the same.
    public var messageID: String
    /// Exact JSON bytes; a replay returns the stored bytes unchanged.
    public var body: [UInt8]
    public var replayed: Bool
    /// Nil for `CustomerCreated`.
    public var errorCode: String?

    public init(type: ReplyType, idempotencyKey: String?, messageID: String, body: [UInt8], replayed: Bool, errorCode: String?) {
        self.type = type
        self.idempotencyKey = idempotencyKey
        self.messageID = messageID
        self.body = body
        self.replayed = replayed
        self.errorCode = errorCode
    }
}

/// The record that makes a command idempotent: its key, what it asked for and the exact reply.
public struct ProcessedRequest: Sendable, Hashable {
    public var idempotencyKey: String
    public var merchantID: String
    public var fingerprint: String
    public var customerID: String
    public var replyType: ReplyType
    public var messageID: String
    public var replyBody: [UInt8]

    public init(idempotencyKey: String, merchantID: String, fingerprint: String, customerID: String, replyType: ReplyType,
                messageID: String, replyBody: [UInt8]) {
        self.idempotencyKey = idempotencyKey
        self.merchantID = merchantID
        self.fingerprint = fingerprint
        self.customerID = customerID
        self.replyType = replyType
        self.messageID = messageID
        self.replyBody = replyBody
    }

    /// Only successes are recorded, so a replay never carries an error code.
    var replay: ReplyRecord {
        ReplyRecord(
            type: replyType, idempotencyKey: idempotencyKey, messageID: messageID, body: replyBody, replayed: true,
            errorCode: nil)
    }
}

/// An API key as stored: never the key itself, only its SHA-256.
public struct StoredAPIKey: Sendable, Hashable {
    public var id: String
    public var merchantID: String
    public var type: APIKeyType
    public var keyHash: [UInt8]
    public var isRevoked: Bool

    public init(id: String, merchantID: String, type: APIKeyType, keyHash: [UInt8], isRevoked: Bool) {
        self.id = id
        self.merchantID = merchantID
        self.type = type
        self.keyHash = keyHash
        self.isRevoked = isRevoked
    }
}

/// A customer row to insert.
public struct NewCustomer: Sendable, Hashable {
    public var id: String
    public var merchantID: String
    /// `externalId` and the optional fields, one column each.
    public var attributes: CreateCustomerCommand
    public var createdAt: Timestamp

    public var reference: CustomerReference { CustomerReference(merchantID: merchantID, externalID: attributes.externalId) }
}

/// What the unique constraint on customers is about: one `externalId` per merchant.
public struct CustomerReference: Sendable, Hashable {
    public var merchantID: String
    public var externalID: String

    public init(merchantID: String, externalID: String) {
        self.merchantID = merchantID
        self.externalID = externalID
    }
}

/// A processed record to look up: its idempotency key, and the customer that key stands for (the
/// key is derived from the merchant and the external id, so each names the other). Both stores
/// find the record through the customer (SQLite's v3, PostgreSQL's migration 4); the key orders
/// the lookups.
public struct RecordLookup: Sendable, Hashable, Comparable {
    public var idempotencyKey: String
    public var customer: CustomerReference

    public init(idempotencyKey: String, customer: CustomerReference) {
        self.idempotencyKey = idempotencyKey
        self.customer = customer
    }

    public static func < (left: RecordLookup, right: RecordLookup) -> Bool { left.idempotencyKey < right.idempotencyKey }
}

extension CustomerField {
    /// The column of this field in both stores' `customers` table: `billingAddress1` →
    /// `billing_address1` (columns follow the contract's field names).
    public var columnName: String {
        var name = ""
        for character in rawValue {
            if character.isUppercase { name += "_" + character.lowercased() } else { name.append(character) }
        }
        return name
    }
}
