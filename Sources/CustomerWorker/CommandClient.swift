import AMQP
import Foundation
import Logging

/// The client side, for the CLI and the benchmark: publish commands with confirms, wait for their
/// replies through RabbitMQ's direct reply-to, or read the inspection queue.
public actor CommandClient {
    public static let directReplyTo = "amq.rabbitmq.reply-to"

    private let session: AMQPSession
    private let configuration: WorkerConfiguration
    private var listeningForReplies = false

    /// Connects, declares the worker's topology (so commands published before any worker ran
    /// wait in the queue) and turns on publisher confirms.
    public init(configuration: WorkerConfiguration, logger: Logger, name: String = "customer-worker client") async throws {
        // Every node of AMQP_URL, like the worker: the client moves on when one is down.
        let nodes = try configuration.amqpNodes.map { node in
            var node = node
            node.connectionName = name
            return node
        }
        self.configuration = configuration
        session = AMQPSession(nodes: nodes, recovery: RecoveryPolicy(maximumAttempts: 3), logger: logger, name: "client")
        try await FairShare.declare(configuration.topology, on: session)
        try await session.enableConfirms()
    }

    public func close() async { await session.close() }

    /// One command to publish.
    public struct Command: Sendable {
        public var body: [UInt8]
        public var messageID: String
        public var correlationID: String?
        public var contentType: String?

        public init(body: [UInt8], messageID: String = UUID().uuidString.lowercased(), correlationID: String? = nil,
                    contentType: String? = "application/json") {
            self.body = body
            self.messageID = messageID
            self.correlationID = correlationID
            self.contentType = contentType
        }
    }

    public enum ClientError: Error, CustomStringConvertible {
        case notRouted(messageID: String, reason: String)
        case refused(messageID: String)
        case unencodable(messageID: String, reason: String)

        public var description: String {
            switch self {
            case .notRouted(let messageID, let reason):
                "command \(messageID) was not routed to a queue (\(reason)): is the command exchange bound?"
            case .refused(let messageID):
                "the broker refused command \(messageID) (nack)"
            case .unencodable(let messageID, let reason):
                "command \(messageID) cannot be sent: \(reason)"
            }
        }
    }

    /// Publishes the commands with confirms; with `wantReplies` their replies come to this client
    /// (see `replies(count:timeout:)`). Throws if the broker did not take every command.
    public func publish(_ commands: [Command], apiKey: String?, wantReplies: Bool, persistent: Bool = true) async throws {
        if wantReplies, !listeningForReplies {
            // Direct reply-to: consume the pseudo-queue (no-ack) on the channel we publish on, first.
            try await session.consume(queue: Self.directReplyTo, noAck: true)
            listeningForReplies = true
        }
        let messages = commands.map { command in
            var headers: [String: FieldValue] = [:]
            if let apiKey { headers["x-api-key"] = .string(apiKey) }
            return OutgoingMessage(
                exchange: configuration.names.commandExchange, routingKey: configuration.names.commandRoutingKey, body: command.body,
                properties: MessageProperties(
                    contentType: command.contentType, headers: headers, persistent: persistent, correlationID: command.correlationID,
                    replyTo: wantReplies ? Self.directReplyTo : nil, messageID: command.messageID,
                    timestamp: UInt64(Date().timeIntervalSince1970), appID: "customer-worker-cli"))
        }
        // In chunks, so the confirm timeout bounds a stall, not the size of what is sent.
        for start in stride(from: 0, to: messages.count, by: Self.publishChunk) {
            let end = min(start + Self.publishChunk, messages.count)
            for (command, outcome) in zip(commands[start..<end], try await session.publish(Array(messages[start..<end]))) {
                switch outcome {
                case .confirmed: continue
                case .returned(_, let text): throw ClientError.notRouted(messageID: command.messageID, reason: text)
                case .nacked: throw ClientError.refused(messageID: command.messageID)
                case .unencodable(let reason): throw ClientError.unencodable(messageID: command.messageID, reason: reason)
                }
            }
        }
    }

    /// Commands handed to the broker per confirm wait.
    private static let publishChunk = 1_000

    /// Replies to commands this client published with `wantReplies`, in arrival order: stops at
    /// `count` or when `timeout` has passed since the call.
    public func replies(count: Int, timeout: Duration) async throws -> [Delivery] {
        var received: [Delivery] = []
        let deadline = ContinuousClock.now + timeout
        while received.count < count, ContinuousClock.now < deadline {
            received += try await session.nextDeliveries(maximum: count - received.count, wait: deadline - ContinuousClock.now)
        }
        return received
    }

    /// Reads from a queue (by default the inspection queue), acknowledging what it returns:
    /// stops after `count` replies or when none came for `idleTimeout`.
    public func read(queue: String? = nil, count: Int?, idleTimeout: Duration, onReply: (Delivery) throws -> Void) async throws -> Int {
        try await session.setPrefetch(UInt16(min(count ?? 256, 256)))
        try await session.consume(queue: queue ?? configuration.names.repliesQueue)
        var read = 0
        while count.map({ read < $0 }) ?? true {
            let batch = try await session.nextDeliveries(maximum: count.map { $0 - read } ?? 256, wait: idleTimeout)
            guard let last = batch.last else { break }
            for delivery in batch { try onReply(delivery) }
            await session.ack(last.tag, multiple: true)
            read += batch.count
        }
        return read
    }
}
