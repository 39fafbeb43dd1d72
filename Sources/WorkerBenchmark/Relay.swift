import AMQP
import CreateCustomer
import CustomerWorker
import Foundation
import Logging

/// The broker's ceiling for the worker's traffic: the worker's broker work without its domain work.
///
/// It follows `CommandWorker`'s discipline on an identical topology: a consumer session with the
/// worker's prefetch takes a batch (the worker's linger), a publisher session publishes one reply
/// per command (the sample reply's size and properties, persistent, to the events exchange, plus
/// a copy to `reply_to` when a command has one) and waits once for the confirms, then the batch
/// is acked with `multiple`. Taking the next batch overlaps with publishing the previous one,
/// at most one batch publishing, as in the worker.
struct Relay: Sendable {
    private let configuration: WorkerConfiguration
    private let reply: ReplyRecord
    private let consumer: AMQPSession
    private let publisher: AMQPSession

    /// Declares the topology and starts consuming; commands published after this are relayed.
    init(topology: BenchTopology, reply: ReplyRecord, logger: Logger) async throws {
        configuration = topology.configuration
        self.reply = reply
        consumer = try topology.session("relay consumer", logger: logger)
        publisher = try topology.session("relay publisher", logger: logger)
        try await consumer.declare(configuration.topology)
        try await consumer.setPrefetch(UInt16(configuration.prefetch))
        try await publisher.enableConfirms()
        try await consumer.consume(queue: configuration.names.commandQueue)
    }

    func close() async {
        await consumer.close()
        await publisher.close()
    }

    /// Relays until the task is cancelled.
    func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { publishing in
            var batchInFlight = false
            while !Task.isCancelled {
                let deliveries = try await consumer.nextDeliveries(
                    maximum: configuration.batchLimit, wait: .milliseconds(100), linger: configuration.batchLinger)
                guard let last = deliveries.last else { continue }
                let replies = replyMessages(for: deliveries)
                if batchInFlight { try await publishing.next() }
                publishing.addTask { try await self.publishAndAck(replies, upTo: last.tag) }
                batchInFlight = true
            }
            try await publishing.waitForAll()
        }
    }

    /// The worker's own reply messages for each command: the same stored reply every time.
    private func replyMessages(for deliveries: [Delivery]) -> [OutgoingMessage] {
        let timestamp = UInt64(Date().timeIntervalSince1970)
        return deliveries.flatMap { configuration.replyMessages(for: $0.properties, reply: reply, timestamp: timestamp) }
    }

    private func publishAndAck(_ replies: [OutgoingMessage], upTo tag: DeliveryTag) async throws {
        let outcomes = try await publisher.publish(replies, timeout: configuration.confirmTimeout)
        if let refused = outcomes.first(where: { $0 == .nacked }) {
            throw BenchmarkError.replyRefused("\(refused)")
        }
        await consumer.ack(tag, multiple: true)
    }
}
