import AMQP
import Foundation
import Logging

/// The dead-letter queue as an operator sees it: read without removing, move commands back to the
/// command exchange, purge. It declares nothing: a queue that does not exist is an error, not
/// something to create with settings that may differ from the worker's.
///
/// Reading holds the dead letters unacknowledged; closing the session returns every one not
/// acknowledged to the queue. A replayed dead letter is acknowledged only after the broker
/// confirmed its copy, so a crash at any point leaves each command in the dead-letter queue, in
/// the command queue, or (between confirm and ack) in both: duplicated at most, never lost, and
/// the worker's idempotency makes the duplicate harmless.
public actor DeadLetterQueue {
    /// The most dead letters one read holds at once (AMQP's prefetch is 16 bits).
    public static let maximumScan = Int(UInt16.max)

    private let session: AMQPSession
    private let configuration: WorkerConfiguration
    private let logger: Logger
    private var consuming = false

    public var queueName: String { configuration.names.deadLetterQueue }

    public enum DeadLetterError: Error, CustomStringConvertible {
        case noQueue(String, AMQPError)
        case notFound([String])
        case copyFailed(id: String, reason: String)

        public var description: String {
            switch self {
            case .noQueue(let name, let error):
                "cannot read dead-letter queue '\(name)' (has a worker declared it? DEAD_LETTER_QUEUE names it): \(error)"
            case .notFound(let ids):
                "not in the dead-letter queue: \(ids.joined(separator: ", "))"
            case .copyFailed(let id, let reason):
                "dead letter \(id) was not replayed and stays in the dead-letter queue: \(reason)"
            }
        }
    }

    public init(configuration: WorkerConfiguration, logger: Logger, name: String = "customer-worker dead-letters") async throws {
        let nodes = try configuration.amqpNodes.map { node in
            var node = node
            node.connectionName = name
            return node
        }
        self.configuration = configuration
        self.logger = logger
        session = AMQPSession(nodes: nodes, recovery: RecoveryPolicy(maximumAttempts: 3), logger: logger, name: "dead-letters")
        try await session.connect()
    }

    public func close() async { await session.close() }

    /// Dead letters waiting in the queue now (not counting any held by another reader).
    public func count() async throws -> Int {
        do {
            return Int(try await session.messageCount(queue: queueName))
        } catch {
            throw DeadLetterError.noQueue(queueName, error)
        }
    }

    /// Up to `limit` dead letters from the head of the queue, left in it. `wait` bounds the wait
    /// for the deliveries the queue said it has.
    public func browse(limit: Int, wait: Duration = .seconds(10)) async throws -> [DeadLetter] {
        try await read(limit: min(limit, Self.maximumScan), wait: wait).map(DeadLetter.init)
    }

    /// The first dead letters whose id is in `ids`, scanning the whole queue (up to `maximumScan`).
    public func find(_ ids: Set<String>, wait: Duration = .seconds(10)) async throws -> [DeadLetter] {
        try await read(limit: Self.maximumScan, wait: wait).map(DeadLetter.init).filter { ids.contains($0.id) }
    }

    /// What a replay did.
    public struct ReplayReport: Sendable {
        /// Copied to the command exchange (confirmed) and removed from the dead-letter queue.
        public var replayed: [String] = []
        /// Confirmed copies whose dead letter could not be acknowledged (the connection dropped):
        /// the dead letter went back to the queue, so the command is there twice.
        public var duplicated: [String] = []
        /// What a dry run would have replayed.
        public var wouldReplay: [String] = []
    }

    /// Moves dead letters back to the command exchange: every one present at the start (`ids`
    /// nil) or those with these ids. Copies go out in batches of `batchSize` with publisher
    /// confirms; each dead letter is acknowledged only after its copy was confirmed. With
    /// `dryRun`, nothing is published or acknowledged. Stops at the first copy the broker did not
    /// take (unroutable or refused), which stays in the dead-letter queue with those after it.
    /// `confirmed` runs after each batch's copies were confirmed and before its dead letters are
    /// acknowledged, with the number of batches confirmed so far (a test's fault injection stops
    /// there: the worst moment for a crash).
    public func replay(ids: Set<String>?, dryRun: Bool, batchSize: Int = 100, wait: Duration = .seconds(10),
                       progress: @Sendable (DeadLetter) -> Void = { _ in },
                       confirmed: @Sendable (_ batches: Int) async throws -> Void = { _ in }) async throws -> ReplayReport {
        var report = ReplayReport()
        let present = try await count()
        guard present > 0 else {
            if let ids, !ids.isEmpty { throw DeadLetterError.notFound(ids.sorted()) }
            return report
        }
        if !dryRun { try await session.enableConfirms() }
        // By id, the whole queue must be held to see past the head; otherwise a batch at a time.
        let window = ids == nil ? min(max(batchSize, 1), present) : min(present, Self.maximumScan)
        try await startConsuming(prefetch: window)
        var seen = 0
        var found: Set<String> = []
        var batches = 0
        while seen < min(present, ids == nil ? Int.max : Self.maximumScan) {
            let deliveries = try await take(min(batchSize, present - seen), wait: wait)
            guard !deliveries.isEmpty else { break }
            seen += deliveries.count
            let chosen = deliveries.map { ($0, DeadLetter($0)) }.filter { ids?.contains($0.1.id) ?? true }
            found.formUnion(chosen.map(\.1.id))
            guard !chosen.isEmpty else { continue }
            if dryRun {
                report.wouldReplay += chosen.map(\.1.id)
                chosen.forEach { progress($0.1) }
                continue
            }
            let copies = chosen.map { $0.1.replayCopy(exchange: configuration.names.commandExchange, routingKey: configuration.names.commandRoutingKey) }
            let outcomes = try await session.publish(copies, timeout: configuration.confirmTimeout)
            batches += 1
            try await confirmed(batches)
            for ((delivery, letter), outcome) in zip(chosen, outcomes) {
                switch outcome {
                case .confirmed:
                    if await session.ack(delivery.tag) {
                        report.replayed.append(letter.id)
                        progress(letter)
                    } else {
                        report.duplicated.append(letter.id)
                    }
                case .returned(let code, let text):
                    throw DeadLetterError.copyFailed(id: letter.id, reason: "the command exchange '\(configuration.names.commandExchange)' did not route it (\(code) \(text))")
                case .nacked:
                    throw DeadLetterError.copyFailed(id: letter.id, reason: "the broker refused the copy (nack)")
                case .unencodable(let reason):
                    // Never sent; the dead letter stays where it is.
                    throw DeadLetterError.copyFailed(id: letter.id, reason: "the copy cannot be encoded (\(reason))")
                }
            }
        }
        // A round trip on the channel after the last acks, so they reach the broker before the
        // caller closes the session (RabbitMQ 3.10 may return dead letters whose acks it had not
        // applied when the channel closed: replayed again later, they are duplicates, not losses).
        if !dryRun, seen > 0 { _ = try? await count() }
        if let ids {
            let missing = ids.subtracting(found)
            if !missing.isEmpty { throw DeadLetterError.notFound(missing.sorted()) }
        }
        return report
    }

    /// Removes every dead letter; returns how many.
    public func purge() async throws -> Int {
        _ = try await count()
        return Int(try await session.purgeQueue(queueName))
    }

    private func read(limit: Int, wait: Duration) async throws -> [Delivery] {
        let wanted = min(limit, try await count())
        guard wanted > 0 else { return [] }
        try await startConsuming(prefetch: wanted)
        return try await take(wanted, wait: wait)
    }

    /// `count` deliveries, fewer only when none came for `wait`.
    private func take(_ count: Int, wait: Duration) async throws -> [Delivery] {
        var deliveries: [Delivery] = []
        while deliveries.count < count {
            let batch = try await session.nextDeliveries(maximum: count - deliveries.count, wait: wait)
            guard !batch.isEmpty else { break }
            deliveries += batch
        }
        return deliveries
    }

    private func startConsuming(prefetch: Int) async throws {
        precondition(!consuming, "one read per session: unacknowledged deliveries return when it closes")
        try await session.setPrefetch(UInt16(clamping: prefetch))
        try await session.consume(queue: queueName)
        consuming = true
    }
}
