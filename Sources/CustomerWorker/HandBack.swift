import AMQP

extension Delivery {
    /// The header recording how often a command was handed back (`DeliveryFate`).
    static let handedBackHeader = "x-handed-back"
    /// Headers the broker keeps for a message in a queue, which a copy must not carry over: a
    /// copy starts its deliveries afresh (quorum queues add `x-delivery-count` from the second).
    static let deliveryCountHeaders = ["x-delivery-count", "x-acquired-count"]

    /// The broker's count of this command's earlier deliveries (`x-delivery-count`; 0 when absent).
    var deliveryCount: Int {
        properties.headers["x-delivery-count"]?.intValue.map { Int(clamping: $0) } ?? 0
    }

    /// Whether a copy can carry this delivery unchanged when published as `user`: not when its
    /// headers could not be decoded, nor when it names another `user_id` (the broker refuses a
    /// publish whose `user_id` is not the connection's user, closing the channel).
    func canBeHandedBack(publishingAs user: String) -> Bool {
        !properties.headersTooDeep && (properties.userID.map { $0 == user } ?? true)
    }

    /// The copy that hands this delivery back: published through the default exchange to the
    /// queue it came from (its shard, under fair share: where the hash of its `x-api-key` puts
    /// it; `fallbackQueue` when the session no longer knows it), so only that queue gets it, with
    /// the body and every property unchanged
    /// (message id, correlation id, reply_to, `x-api-key`, trace headers…), the broker's delivery
    /// counts dropped, and `x-handed-back` counting the hand-backs.
    func handBackCopy(fallbackQueue: String) -> OutgoingMessage {
        var copied = properties
        for name in Self.deliveryCountHeaders { copied.headers[name] = nil }
        let earlier = properties.headers[Self.handedBackHeader]?.intValue ?? 0
        // The header arrives from the sender too: a count at Int64.max must not trap the worker.
        copied.headers[Self.handedBackHeader] = .int(earlier == .max ? .max : earlier + 1)
        return OutgoingMessage(exchange: "", routingKey: queue ?? fallbackQueue, body: body, properties: copied, mandatory: true)
    }
}
