import AMQP
import CreateCustomer
import Crypto
import Foundation

/// One command in the dead-letter queue, as `customer-worker dead-letters` shows it. Built from the
/// delivery alone; it never holds the API key, only the key id inside it.
public struct DeadLetter: Sendable {
    /// The command's `message_id`, or `sha256:<16 hex>` of its body when it has none.
    public var id: String
    /// `sk_<key id>` (or `pk_…`) from `x-api-key`; `hidden` when the header is not a key of ours,
    /// nil when there is no header.
    public var apiKeyID: String?
    public var externalId: String?
    /// The first death (`x-first-death-reason`, `x-first-death-queue`): rejected, delivery_limit,
    /// expired, maxlen.
    public var reason: String?
    public var queue: String?
    /// When the command was dead-lettered the first time (its `x-death` entry's `time`).
    public var deadLetteredAt: Date?
    /// The command's own `timestamp` property (when it was published).
    public var publishedAt: Date?
    /// Times the command was dead-lettered (the sum of its `x-death` counts).
    public var deaths: Int
    /// Deliveries of the command (`x-delivery-count`, set by quorum queues), if the broker said.
    public var deliveryCount: Int?
    /// Times this tool has replayed it before (`x-dead-letter-replays`).
    public var replays: Int
    public var properties: MessageProperties
    public var body: [UInt8]

    /// Headers the broker writes when it dead-letters or redelivers; a replayed copy starts without them.
    static let brokerHeaders: Set<String> = [
        "x-death", "x-first-death-reason", "x-first-death-queue", "x-first-death-exchange",
        "x-last-death-reason", "x-last-death-queue", "x-last-death-exchange", "x-delivery-count",
    ]
    public static let replaysHeader = "x-dead-letter-replays"

    public init(_ delivery: Delivery) {
        let headers = delivery.properties.headers
        properties = delivery.properties
        body = delivery.body
        id = delivery.properties.messageID.flatMap { $0.isEmpty ? nil : $0 }
            ?? "sha256:" + SHA256.hash(data: delivery.body).prefix(8).map { String(format: "%02x", $0) }.joined()
        apiKeyID = headers["x-api-key"].map(Self.keyID(of:))
        let object = try? JSONSerialization.jsonObject(with: Data(delivery.body)) as? [String: Any]
        externalId = object?["externalId"] as? String
        let deaths: [[String: FieldValue]] = headers["x-death"].flatMap { value in
            guard case .array(let entries) = value else { return nil }
            return entries.compactMap { if case .table(let table) = $0 { table } else { nil } }
        } ?? []
        // The broker keeps the most recent death first; the first death is the last entry.
        let first = deaths.last
        reason = headers["x-first-death-reason"]?.stringValue ?? first?["reason"]?.stringValue
        queue = headers["x-first-death-queue"]?.stringValue ?? first?["queue"]?.stringValue
        deadLetteredAt = first?["time"].flatMap(Self.date(of:))
        publishedAt = delivery.properties.timestamp.map { Date(timeIntervalSince1970: TimeInterval($0)) }
        self.deaths = deaths.reduce(0) { $0 + Int($1["count"]?.intValue ?? 1) }
        deliveryCount = headers["x-delivery-count"]?.intValue.map(Int.init)
        replays = Int(headers[Self.replaysHeader]?.intValue ?? 0)
    }

    /// The key id of an `x-api-key` value, never the value: a header that is not one of our keys
    /// may still be someone's secret.
    static func keyID(of header: FieldValue) -> String {
        guard let value = header.stringValue, let (id, type) = APIKeys.keyID(from: value), let type else { return "hidden" }
        return type.prefix + id
    }

    private static func date(of value: FieldValue) -> Date? {
        switch value {
        case .timestamp(let seconds): Date(timeIntervalSince1970: TimeInterval(seconds))
        case .int(let seconds): Date(timeIntervalSince1970: TimeInterval(seconds))
        default: nil
        }
    }

    /// Seconds since the first death (or since publishing when the broker gave no death time).
    public func age(now: Date = Date()) -> TimeInterval? {
        (deadLetteredAt ?? publishedAt).map { max(0, now.timeIntervalSince($0)) }
    }

    /// The copy that goes back to the command exchange: the command's body and properties, minus
    /// the broker's death and delivery headers, plus the count of replays.
    func replayCopy(exchange: String, routingKey: String) -> OutgoingMessage {
        var copied = properties
        for name in Self.brokerHeaders { copied.headers[name] = nil }
        copied.headers[Self.replaysHeader] = .int(Int64(replays == .max ? .max : replays + 1))  // a sender may set it: never trap
        copied.persistent = true
        return OutgoingMessage(exchange: exchange, routingKey: routingKey, body: body, properties: copied)
    }

    /// The summary `list --json` prints per dead letter and `show` prints before the body.
    public func summary(now: Date = Date()) -> [String: Any] {
        var fields: [String: Any] = ["id": id, "deaths": deaths, "replays": replays]
        fields["apiKeyId"] = apiKeyID
        fields["externalId"] = externalId
        fields["reason"] = reason
        fields["queue"] = queue
        fields["deliveryCount"] = deliveryCount
        fields["deadLetteredAt"] = deadLetteredAt.map(Self.iso8601)
        fields["publishedAt"] = publishedAt.map(Self.iso8601)
        fields["ageSeconds"] = age(now: now).map { Int($0) }
        return fields
    }

    /// Everything `show` prints: the summary, the properties (the API key as its key id) and the
    /// body (as JSON when it is JSON, else as text).
    public func details(now: Date = Date()) -> [String: Any] {
        var fields = summary(now: now)
        var shownProperties: [String: Any] = [:]
        shownProperties["contentType"] = properties.contentType
        shownProperties["correlationId"] = properties.correlationID
        shownProperties["replyTo"] = properties.replyTo
        shownProperties["type"] = properties.type
        shownProperties["appId"] = properties.appID
        var headers: [String: Any] = [:]
        for (name, value) in properties.headers {
            headers[name] = name == "x-api-key" ? Self.keyID(of: value) : Self.json(value)
        }
        shownProperties["headers"] = headers
        fields["properties"] = shownProperties
        if let object = try? JSONSerialization.jsonObject(with: Data(body)), object is [String: Any] || object is [Any] {
            fields["body"] = object
        } else {
            fields["bodyText"] = String(decoding: body, as: UTF8.self)
        }
        return fields
    }

    private static func json(_ value: FieldValue) -> Any {
        switch value {
        case .string(let string): string
        case .bool(let bool): bool
        case .int(let int): int
        case .double(let double): double
        case .timestamp(let seconds): iso8601(Date(timeIntervalSince1970: TimeInterval(seconds)))
        case .bytes(let bytes): "<\(bytes.count) bytes>"
        case .array(let values): values.map(json)
        case .table(let table): table.mapValues(json)
        case .void: NSNull()
        }
    }

    static func iso8601(_ date: Date) -> String {
        date.formatted(.iso8601)
    }
}
