import AMQP
import CreateCustomer
import CustomerWorker
import Foundation
import Logging
import Synchronization

/// How the load generator paces its commands.
enum Pacing: Sendable {
    /// As fast as the broker confirms them, with at most `window` commands waiting for their reply
    /// (enough to keep every consumer's prefetch full, without piling the whole run into the queue).
    case closedLoop(window: Int)
    /// On a fixed schedule; each latency counts from the command's scheduled send time, so a stall
    /// anywhere shows in the latency of every command it delayed (no coordinated omission).
    case openLoop(perSecond: Double)
    /// Every command queued before the consumers start (`fill()`), as after an outage or a deploy;
    /// the run only takes the replies and is timed from the first reply to the last. Latency then
    /// measures time spent queued, so none is recorded.
    case backlog
}

/// Replies by kind, as the worker reports them in their AMQP properties.
struct ReplyTally: Sendable, Codable {
    var created = 0
    var replayed = 0
    var failed = 0
    /// Replies to commands already answered (a redelivery after a reconnect).
    var extra = 0

    mutating func count(_ properties: MessageProperties) {
        if properties.type != ReplyType.customerCreated.rawValue {
            failed += 1
        } else if properties.headers["x-replayed"] == .bool(true) {
            replayed += 1
        } else {
            created += 1
        }
    }
}

/// What one measured run saw.
struct LoadResult: Sendable {
    /// From the first command sent (or scheduled) to the last reply received; for a backlog, from
    /// the first reply to the last.
    var elapsed: Duration
    /// Publish → reply, per command (empty for a backlog).
    var latency: LatencyHistogram
    var tally: ReplyTally
    /// Commands answered (the first reply of each).
    var replies: Int

    var messagesPerSecond: Double { Double(replies) / elapsed.seconds }
}

/// Publishes the workload's commands and takes their replies from the inspection queue the
/// events exchange feeds, on two sessions so that neither waits for the other: one publishes with
/// confirms, the other only receives and timestamps. The reply's `correlation_id` (which the
/// worker copies from the command) is the command's index in the workload.
struct LoadGenerator: Sendable {
    private static let closedLoopBatch = 500
    /// Replies taken per read: small, so each is timestamped within microseconds of its arrival.
    private static let receiveBatch = 32
    private static let openLoopTick: Duration = .milliseconds(2)

    let topology: BenchTopology
    let workload: Workload
    let apiKey: String
    let pacing: Pacing
    let replyTimeout: Duration
    private let publisher: AMQPSession
    private let receiver: AMQPSession

    /// Connects both sessions, declares the topology (idempotently) and starts taking replies.
    init(topology: BenchTopology, workload: Workload, apiKey: String, pacing: Pacing, replyTimeout: Duration,
         logger: Logger) async throws {
        self.topology = topology
        self.workload = workload
        self.apiKey = apiKey
        self.pacing = pacing
        self.replyTimeout = replyTimeout
        publisher = try topology.session("publisher", logger: logger)
        receiver = try topology.session("receiver", logger: logger)
        try await publisher.declare(topology.topology)
        try await publisher.enableConfirms()
        try await receiver.consume(queue: topology.configuration.names.repliesQueue, noAck: true)
    }

    func close() async {
        await publisher.close()
        await receiver.close()
    }

    // MARK: Warm-up

    /// Sends `count` commands outside the measurement and waits for their replies: the consumers
    /// are attached and every connection and code path is warm once this returns.
    func warmUp(count: Int, firstNumber: Int) async throws {
        let numbers = firstNumber..<(firstNumber + count)
        try await publish(numbers.map { command(body: workload.shape.body(.warmUp, $0), correlationID: "w-\($0)") })
        var received = 0
        let deadline = ContinuousClock.now + replyTimeout
        while received < count {
            guard ContinuousClock.now < deadline else {
                throw BenchmarkError.repliesMissing(phase: "warm-up", received: received, expected: count, waited: replyTimeout)
            }
            received += try await receiver.nextDeliveries(maximum: count - received, wait: .milliseconds(100)).count
        }
    }

    // MARK: Backlog

    /// Queues every command of the workload (confirmed by the broker) before anything consumes.
    func fill() async throws {
        for start in stride(from: 0, to: workload.count, by: Self.closedLoopBatch) {
            try await publish(indices: start..<min(workload.count, start + Self.closedLoopBatch))
        }
    }

    // MARK: Measured run

    func run() async throws -> LoadResult {
        let progress = ReplyProgress()
        let clock = ContinuousClock()
        return try await withThrowingTaskGroup(of: Phase.self) { group in
            group.addTask { .sent(try await self.send(progress: progress, clock: clock)) }
            group.addTask { try await self.receive(progress: progress, clock: clock) }
            var sends: [ContinuousClock.Instant] = []
            var received: Phase.Received?
            for try await phase in group {
                switch phase {
                case .sent(let instants): sends = instants
                case .received(let replies): received = replies
                }
            }
            let arrivals = received?.arrivals.compactMap(\.self) ?? []
            let start = if case .backlog = pacing { arrivals.min() } else { sends.min() }
            guard let received, let start, let last = arrivals.max() else {
                throw BenchmarkError.setupFailed("the load generator finished without its measurements")
            }
            var latency = LatencyHistogram()
            for (sent, arrived) in zip(sends, received.arrivals) {
                if let arrived { latency.record(arrived - sent) }
            }
            return LoadResult(elapsed: last - start, latency: latency, tally: received.tally, replies: arrivals.count)
        }
    }

    /// What each half of a run returns.
    private enum Phase: Sendable {
        struct Received: Sendable {
            var arrivals: [ContinuousClock.Instant?]
            var tally: ReplyTally
        }

        /// When each command was sent (closed loop) or due (open loop).
        case sent([ContinuousClock.Instant])
        case received(Received)
    }

    private func send(progress: ReplyProgress, clock: ContinuousClock) async throws -> [ContinuousClock.Instant] {
        switch pacing {
        case .closedLoop(let window): try await sendClosedLoop(window: window, progress: progress, clock: clock)
        case .openLoop(let perSecond): try await sendOpenLoop(perSecond: perSecond, clock: clock)
        case .backlog: []  // queued by `fill()` before the run
        }
    }

    private func sendClosedLoop(window: Int, progress: ReplyProgress, clock: ContinuousClock) async throws -> [ContinuousClock.Instant] {
        var sends: [ContinuousClock.Instant] = []
        sends.reserveCapacity(workload.count)
        while sends.count < workload.count {
            let room = window - (sends.count - progress.received)
            guard room > 0 else {
                try await Task.sleep(for: .milliseconds(1))
                continue
            }
            let batch = sends.count..<min(workload.count, sends.count + min(room, Self.closedLoopBatch))
            let now = clock.now
            sends += batch.map { _ in now }
            try await publish(indices: batch)
        }
        return sends
    }

    private func sendOpenLoop(perSecond: Double, clock: ContinuousClock) async throws -> [ContinuousClock.Instant] {
        let start = clock.now + .milliseconds(10)
        let sends = (0..<workload.count).map { start + .seconds(Double($0) / perSecond) }
        var next = 0
        var tick = start
        while next < workload.count {
            tick = max(sends[next], tick + Self.openLoopTick)
            try await clock.sleep(until: tick)
            let now = clock.now
            var end = next
            while end < workload.count, sends[end] <= now { end += 1 }
            try await publish(indices: next..<end)
            next = end
        }
        return sends
    }

    private func receive(progress: ReplyProgress, clock: ContinuousClock) async throws -> Phase {
        var replies = Phase.Received(arrivals: Array(repeating: nil, count: workload.count), tally: ReplyTally())
        var received = 0
        var lastArrival = clock.now
        while received < workload.count {
            try Task.checkCancellation()
            let batch = try await receiver.nextDeliveries(maximum: Self.receiveBatch, wait: .milliseconds(100))
            let now = clock.now
            guard !batch.isEmpty else {
                if now - lastArrival > replyTimeout {
                    throw BenchmarkError.repliesMissing(phase: "run", received: received, expected: workload.count, waited: replyTimeout)
                }
                continue
            }
            lastArrival = now
            for delivery in batch {
                guard let index = delivery.properties.correlationID.flatMap({ Int($0) }), replies.arrivals.indices.contains(index)
                else { continue }  // a late warm-up reply
                if replies.arrivals[index] == nil {
                    replies.arrivals[index] = now
                    replies.tally.count(delivery.properties)
                    received += 1
                } else {
                    replies.tally.extra += 1
                }
            }
            progress.received = received
        }
        return .received(replies)
    }

    // MARK: Publishing

    private func publish(indices: Range<Int>) async throws {
        guard !indices.isEmpty else { return }
        try await publish(indices.map { command(body: workload.body(at: $0), correlationID: String($0)) })
    }

    private func command(body: [UInt8], correlationID: String) -> OutgoingMessage {
        topology.command(body: body, apiKey: apiKey, correlationID: correlationID)
    }

    private func publish(_ messages: [OutgoingMessage]) async throws {
        for outcome in try await publisher.publish(messages) where outcome != .confirmed {
            throw BenchmarkError.commandRefused("\(outcome)")
        }
    }
}

/// Replies received so far, shared by the receiving half of a run with the closed-loop sender.
private final class ReplyProgress: Sendable {
    private let counter = Atomic<Int>(0)

    var received: Int {
        get { counter.load(ordering: .relaxed) }
        set { counter.store(newValue, ordering: .relaxed) }
    }
}

extension Duration {
    var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }
}
