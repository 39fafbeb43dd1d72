import AMQP
import Foundation
import Logging
import Synchronization

/// A downstream service reading the replies, as in production: its own durable quorum queue
/// bound to the events exchange beside the inspection queue, consumed with acks (`multiple`,
/// once per read). Ceiling and worker carry the same fan-out when both modes have the same
/// readers (`--downstream-queues`).
final class DownstreamReader: Sendable {
    private static let prefetch: UInt16 = 512
    private static let readBatch = 256

    let queue: String
    private let session: AMQPSession
    /// Replies of the measured run (a correlation id that is a workload index) taken so far.
    private let taken = Atomic<Int>(0)
    private let commands: Int

    /// Connects and starts consuming `queue`, which the topology declared and bound.
    init(topology: BenchTopology, queue: String, commands: Int, logger: Logger) async throws {
        self.queue = queue
        self.commands = commands
        session = try topology.session("downstream \(queue)", logger: logger)
        try await session.setPrefetch(Self.prefetch)
        _ = try await session.consume(queue: queue)
    }

    var replies: Int { taken.load(ordering: .relaxed) }

    /// Takes and acknowledges replies until the task is cancelled.
    func run() async throws {
        while !Task.isCancelled {
            let batch = try await session.nextDeliveries(maximum: Self.readBatch, wait: .milliseconds(100))
            guard let last = batch.last?.tag else { continue }
            let measured = batch.count { delivery in
                delivery.properties.correlationID.flatMap { Int($0) }.map { (0..<commands).contains($0) } ?? false
            }
            taken.add(measured, ordering: .relaxed)
            _ = await session.ack(last, multiple: true)
        }
    }

    /// Waits until this reader has taken `count` measured replies, or `timeout` passed; returns
    /// what it has.
    func waitFor(_ count: Int, timeout: Duration) async -> Int {
        let deadline = ContinuousClock.now + timeout
        while replies < count, ContinuousClock.now < deadline {
            try? await Task.sleep(for: .milliseconds(20))
        }
        return replies
    }

    func close() async { await session.close() }
}
