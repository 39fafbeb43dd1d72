import CRabbitMQ

/// The `basic` content properties of a message. `nil` means "not set".
public struct MessageProperties: Sendable, Hashable {
    public var contentType: String?
    public var contentEncoding: String?
    public var headers: [String: FieldValue]
    /// `true` → delivery mode 2 (persistent), `false` → 1, `nil` → not set (transient).
    public var persistent: Bool?
    public var priority: UInt8?
    public var correlationID: String?
    public var replyTo: String?
    public var expiration: String?
    public var messageID: String?
    /// Seconds since the epoch.
    public var timestamp: UInt64?
    public var type: String?
    public var userID: String?
    public var appID: String?
    /// True when the received headers nest tables or arrays deeper than
    /// `FieldValue.maximumNesting`: `headers` is then empty (nothing of them was decoded).
    public var headersTooDeep = false

    public init(
        contentType: String? = nil, contentEncoding: String? = nil, headers: [String: FieldValue] = [:],
        persistent: Bool? = nil, priority: UInt8? = nil, correlationID: String? = nil, replyTo: String? = nil,
        expiration: String? = nil, messageID: String? = nil, timestamp: UInt64? = nil, type: String? = nil,
        userID: String? = nil, appID: String? = nil
    ) {
        self.contentType = contentType
        self.contentEncoding = contentEncoding
        self.headers = headers
        self.persistent = persistent
        self.priority = priority
        self.correlationID = correlationID
        self.replyTo = replyTo
        self.expiration = expiration
        self.messageID = messageID
        self.timestamp = timestamp
        self.type = type
        self.userID = userID
        self.appID = appID
    }
}

/// A message to publish.
public struct OutgoingMessage: Sendable, Hashable {
    public var exchange: String
    public var routingKey: String
    public var body: [UInt8]
    public var properties: MessageProperties
    /// Ask the broker to return the message if no queue takes it.
    public var mandatory: Bool

    public init(exchange: String, routingKey: String, body: [UInt8], properties: MessageProperties = .init(), mandatory: Bool = true) {
        self.exchange = exchange
        self.routingKey = routingKey
        self.body = body
        self.properties = properties
        self.mandatory = mandatory
    }
}

/// Identifies a delivery on one particular channel incarnation. A tag from before a reconnect
/// is stale: the broker has already requeued that delivery, and the number may now name another.
public struct DeliveryTag: Sendable, Hashable, Comparable {
    public let connectionGeneration: UInt64
    public let value: UInt64

    public static func < (lhs: DeliveryTag, rhs: DeliveryTag) -> Bool {
        (lhs.connectionGeneration, lhs.value) < (rhs.connectionGeneration, rhs.value)
    }
}

/// A message delivered to one of our consumers.
///
/// Its fields live in one immutable object: a delivery is copied from stage to stage (the session's
/// buffer, the lanes, a batch's items, the store's commands, the publish phase), and a copy of the
/// object is one retain where a copy of the fields was one per string and array (84 retains a
/// command, BENCHMARKS.md, "Issue 26: is the worker waiting, or working?"). Still a value: nothing
/// of it changes after it is read off the socket.
public struct Delivery: Sendable {
    /// `Sendable` by construction: final, and every stored property a `let` of a `Sendable` type.
    private final class Fields: Sendable {
        let tag: DeliveryTag
        let consumerTag: String
        let queue: String?
        let redelivered: Bool
        let exchange: String
        let routingKey: String
        let body: [UInt8]
        let properties: MessageProperties
        let receivedAt: ContinuousClock.Instant

        init(tag: DeliveryTag, consumerTag: String, queue: String?, redelivered: Bool, exchange: String, routingKey: String,
             body: [UInt8], properties: MessageProperties, receivedAt: ContinuousClock.Instant) {
            self.tag = tag
            self.consumerTag = consumerTag
            self.queue = queue
            self.redelivered = redelivered
            self.exchange = exchange
            self.routingKey = routingKey
            self.body = body
            self.properties = properties
            self.receivedAt = receivedAt
        }
    }

    private let fields: Fields

    init(tag: DeliveryTag, consumerTag: String, queue: String?, redelivered: Bool, exchange: String, routingKey: String,
         body: [UInt8], properties: MessageProperties, receivedAt: ContinuousClock.Instant) {
        fields = Fields(tag: tag, consumerTag: consumerTag, queue: queue, redelivered: redelivered, exchange: exchange,
                        routingKey: routingKey, body: body, properties: properties, receivedAt: receivedAt)
    }

    public var tag: DeliveryTag { fields.tag }
    public var consumerTag: String { fields.consumerTag }
    /// The queue its consumer consumes (a session may consume several); nil when the consumer is
    /// no longer known to the session (cancelled meanwhile).
    public var queue: String? { fields.queue }
    public var redelivered: Bool { fields.redelivered }
    public var exchange: String { fields.exchange }
    public var routingKey: String { fields.routingKey }
    public var body: [UInt8] { fields.body }
    public var properties: MessageProperties { fields.properties }
    /// Lends the properties where they are: `properties` returns a copy (a retain and a release
    /// for each string and table), which a caller reading a few of them does not need.
    public func withProperties<Result>(_ body: (borrowing MessageProperties) throws -> Result) rethrows -> Result {
        try body(fields.properties)
    }
    /// When the session read it off the socket: how long a consumer has held a delivery, which the
    /// broker bounds (`consumer_timeout`).
    public var receivedAt: ContinuousClock.Instant { fields.receivedAt }
}

/// What the broker said about one published message.
public enum PublishOutcome: Sendable, Hashable {
    /// The broker took responsibility for the message (`basic.ack`).
    case confirmed
    /// Mandatory and unroutable: the broker sent it back (`basic.return`) and then confirmed it.
    case returned(replyCode: UInt16, replyText: String)
    /// The broker could not take it (`basic.nack`), e.g. a queue at its limit with reject-publish.
    case nacked
    /// Never sent: the client cannot encode it (`AMQPError.unencodable`, e.g. a property longer
    /// than 255 bytes). The connection and the other messages are unaffected.
    case unencodable(reason: String)
}

extension MessageProperties {
    /// The longest value an AMQP short string (every string property, a routing key, an exchange
    /// name) may have, in UTF-8 bytes.
    public static let maximumShortStringBytes = 255

    /// `value` when it fits a short string, nil when it cannot be carried.
    public static func shortString(_ value: String?) -> String? {
        guard let value, value.utf8.count <= maximumShortStringBytes else { return nil }
        return value
    }
}

// MARK: - C conversion

extension MessageProperties {
    /// Builds the C properties in `arena`; valid until the arena is reset.
    func cProperties(in arena: EncodingArena) -> amqp_basic_properties_t {
        var props = amqp_basic_properties_t()
        var flags: amqp_flags_t = 0
        func set(_ value: String?, _ flag: amqp_flags_t, _ assign: (amqp_bytes_t) -> Void) {
            guard let value else { return }
            assign(arena.bytes(value))
            flags |= flag
        }
        set(contentType, CW_FLAG_CONTENT_TYPE) { props.content_type = $0 }
        set(contentEncoding, CW_FLAG_CONTENT_ENCODING) { props.content_encoding = $0 }
        set(correlationID, CW_FLAG_CORRELATION_ID) { props.correlation_id = $0 }
        set(replyTo, CW_FLAG_REPLY_TO) { props.reply_to = $0 }
        set(expiration, CW_FLAG_EXPIRATION) { props.expiration = $0 }
        set(messageID, CW_FLAG_MESSAGE_ID) { props.message_id = $0 }
        set(type, CW_FLAG_TYPE) { props.type = $0 }
        set(userID, CW_FLAG_USER_ID) { props.user_id = $0 }
        set(appID, CW_FLAG_APP_ID) { props.app_id = $0 }
        if !headers.isEmpty {
            props.headers = arena.table(headers)
            flags |= CW_FLAG_HEADERS
        }
        if let persistent {
            props.delivery_mode = persistent ? 2 : 1
            flags |= CW_FLAG_DELIVERY_MODE
        }
        if let priority {
            props.priority = priority
            flags |= CW_FLAG_PRIORITY
        }
        if let timestamp {
            props.timestamp = timestamp
            flags |= CW_FLAG_TIMESTAMP
        }
        props._flags = flags
        return props
    }

    /// The properties of a received message, every string decoded afresh.
    init(_ props: amqp_basic_properties_t) {
        var fresh = RecentPropertyStrings()
        self.init(props, repeating: &fresh)
    }

    /// The properties of a received message; the ones a sender repeats reuse the `String`s (and
    /// the headers) of the last message's (`RecentPropertyStrings`).
    init(_ props: amqp_basic_properties_t, repeating recent: inout RecentPropertyStrings) {
        let flags = props._flags
        func get(_ flag: amqp_flags_t, _ bytes: amqp_bytes_t) -> String? {
            flags & flag != 0 ? String(amqpBytes: bytes) : nil
        }
        func get(_ flag: amqp_flags_t, _ bytes: amqp_bytes_t, _ last: inout RecentString) -> String? {
            flags & flag != 0 ? last.string(bytes) : nil
        }
        let headers = flags & CW_FLAG_HEADERS != 0 ? recent.headers.headers(props.headers) : [:]
        self.init(
            contentType: get(CW_FLAG_CONTENT_TYPE, props.content_type, &recent.contentType),
            contentEncoding: get(CW_FLAG_CONTENT_ENCODING, props.content_encoding, &recent.contentEncoding),
            headers: headers ?? [:],
            persistent: flags & CW_FLAG_DELIVERY_MODE != 0 ? props.delivery_mode == 2 : nil,
            priority: flags & CW_FLAG_PRIORITY != 0 ? props.priority : nil,
            correlationID: get(CW_FLAG_CORRELATION_ID, props.correlation_id),
            replyTo: get(CW_FLAG_REPLY_TO, props.reply_to, &recent.replyTo),
            expiration: get(CW_FLAG_EXPIRATION, props.expiration),
            messageID: get(CW_FLAG_MESSAGE_ID, props.message_id),
            timestamp: flags & CW_FLAG_TIMESTAMP != 0 ? props.timestamp : nil,
            type: get(CW_FLAG_TYPE, props.type, &recent.type),
            userID: get(CW_FLAG_USER_ID, props.user_id, &recent.userID),
            appID: get(CW_FLAG_APP_ID, props.app_id, &recent.appID)
        )
        headersTooDeep = headers == nil
    }
}
