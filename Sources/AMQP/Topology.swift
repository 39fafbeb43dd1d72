/// Exchanges, queues and bindings a session declares on connect and again after every reconnect.
/// Declarations are idempotent: declaring what exists with the same arguments is a no-op.
public struct Topology: Sendable, Hashable {
    public struct Exchange: Sendable, Hashable {
        public var name: String
        public var type: String
        public var durable: Bool
        public var arguments: [String: FieldValue]

        public init(name: String, type: String, durable: Bool = true, arguments: [String: FieldValue] = [:]) {
            self.name = name
            self.type = type
            self.durable = durable
            self.arguments = arguments
        }
    }

    public struct Queue: Sendable, Hashable {
        public var name: String
        public var durable: Bool
        public var exclusive: Bool
        public var autoDelete: Bool
        public var arguments: [String: FieldValue]
        /// The arguments an earlier version declared this queue with. A queue's type and limits
        /// cannot change once it exists (the broker answers 406 PRECONDITION_FAILED), so a broker
        /// that already has it declared that way keeps it as it is, and the session says so in
        /// its log, instead of failing to start: the operator moves it when it suits them.
        public var earlierArguments: [String: FieldValue]?

        public init(name: String, durable: Bool = true, exclusive: Bool = false, autoDelete: Bool = false,
                    arguments: [String: FieldValue] = [:], earlierArguments: [String: FieldValue]? = nil) {
            self.name = name
            self.durable = durable
            self.exclusive = exclusive
            self.autoDelete = autoDelete
            self.arguments = arguments
            self.earlierArguments = earlierArguments
        }

        /// This queue, accepting a broker that has it with `arguments` (`earlierArguments`).
        public func declaredEarlier(as arguments: [String: FieldValue]) -> Queue {
            var queue = self
            queue.earlierArguments = arguments
            return queue
        }

        /// A durable quorum queue; `deliveryLimit` bounds redeliveries before dead-lettering.
        public static func quorum(_ name: String, deliveryLimit: Int? = nil, deadLetterExchange: String? = nil,
                                  maxLength: Int? = nil, overflow: String? = nil) -> Queue {
            var arguments: [String: FieldValue] = ["x-queue-type": "quorum"]
            if let deliveryLimit { arguments["x-delivery-limit"] = .int(Int64(deliveryLimit)) }
            if let deadLetterExchange { arguments["x-dead-letter-exchange"] = .string(deadLetterExchange) }
            if let maxLength { arguments["x-max-length"] = .int(Int64(maxLength)) }
            if let overflow { arguments["x-overflow"] = .string(overflow) }
            return Queue(name: name, arguments: arguments)
        }
    }

    public struct Binding: Sendable, Hashable {
        public var queue: String
        public var exchange: String
        public var routingKey: String

        public init(queue: String, exchange: String, routingKey: String) {
            self.queue = queue
            self.exchange = exchange
            self.routingKey = routingKey
        }
    }

    /// An exchange-to-exchange binding (a RabbitMQ extension): what `source` routes with
    /// `routingKey` goes on to `destination`, which routes it by its own type.
    public struct ExchangeBinding: Sendable, Hashable {
        public var destination: String
        public var source: String
        public var routingKey: String

        public init(destination: String, source: String, routingKey: String) {
            (self.destination, self.source, self.routingKey) = (destination, source, routingKey)
        }
    }

    public var exchanges: [Exchange]
    public var queues: [Queue]
    public var bindings: [Binding]
    public var exchangeBindings: [ExchangeBinding]
    /// Bindings that must not exist, e.g. left by an earlier version of the topology: removed at
    /// every declaration, after the bindings above were made (so a message routed meanwhile
    /// reaches both paths rather than neither). Removing a binding that does not exist, or whose
    /// queue or exchange does not, changes nothing.
    public var removedBindings: [Binding]
    public var removedExchangeBindings: [ExchangeBinding]

    public init(exchanges: [Exchange] = [], queues: [Queue] = [], bindings: [Binding] = [],
                exchangeBindings: [ExchangeBinding] = [], removedBindings: [Binding] = [],
                removedExchangeBindings: [ExchangeBinding] = []) {
        self.exchanges = exchanges
        self.queues = queues
        self.bindings = bindings
        self.exchangeBindings = exchangeBindings
        self.removedBindings = removedBindings
        self.removedExchangeBindings = removedExchangeBindings
    }

    public mutating func merge(_ other: Topology) {
        exchanges += other.exchanges.filter { !exchanges.contains($0) }
        queues += other.queues.filter { !queues.contains($0) }
        bindings += other.bindings.filter { !bindings.contains($0) }
        exchangeBindings += other.exchangeBindings.filter { !exchangeBindings.contains($0) }
        removedBindings += other.removedBindings.filter { !removedBindings.contains($0) }
        removedExchangeBindings += other.removedExchangeBindings.filter { !removedExchangeBindings.contains($0) }
    }
}
