import AMQP
import CreateCustomer
import CustomerWorker
import Foundation
import Logging
import Synchronization

/// `--tenants` (issue 27): what one merchant's bulk import does to the others. For each topology
/// (fair share with the run's shards, then the single command queue), on fresh queues and fresh
/// merchants, with real worker processes:
/// 1. unloaded: the light merchants publish on their own (open loop, `--light-rate` each) for
///    `--unloaded-seconds`, every reply awaited;
/// 2. flood: with the workers stopped, the heavy merchant publishes `--messages` commands (an
///    import published in bulk, confirmed by the broker); new workers start, and the light
///    merchants publish at their rate until the heavy merchant's backlog is drained.
/// Light latencies count from each command's scheduled send time (no coordinated omission), to
/// the reply's arrival twice over: its copy through direct reply-to (`reply_to`, as the CLI and a
/// sender waiting for its answer receive it: the figure the targets use) and its events copy on
/// the shared replies queue (behind whatever of the heavy merchant's replies the bench's one
/// reader has not yet taken). The heavy merchant's rate counts from its first reply to its last.
/// Under fair share the light merchants are chosen outside the heavy merchant's shard (each is
/// probed: one command published with no worker consuming, and the shard whose count grew
/// noted): two merchants sharing a shard share its queue, which the report says is the design's
/// limit.
///
/// Beside the light merchants, in both phases and at the same rate, the broker's floor for the same
/// round trip: probe commands on a quorum queue of their own, sent with direct reply-to on the
/// light merchants' channel and taken by a no-op relay (`customer-worker-relay`, a process of its
/// own, as the ceiling's) that publishes a reply of the worker's size to that address with
/// confirms and acknowledges once confirmed: the light commands' path without the worker's work.
/// What the relay's latency grows by under the flood is the broker's and the machine's (the cores
/// it shares with the workers), not the worker's: no worker can do better on the same run. (The
/// relay speaks plain AMQP only: over `amqps://` the probes are left out.)
struct TenantsRun: Sendable {
    let settings: BenchmarkSettings
    let runID: String
    let directory: URL
    let workerBinary: String
    let logger: Logger
    let progress: @Sendable (String) -> Void
    let shape = CommandShape(size: nil)

    func measure(_ database: BenchDatabase) async throws -> TenantsReport {
        // Fair share as configured, then the single queue; once when the run's shards are 0.
        let shardCounts = settings.fairShareShards > 0 ? [settings.fairShareShards, 0] : [0]
        var modes: [TenantsReport.Mode] = []
        // The no-op relay's reply: the worker's to a command of the run's shape, its size and properties.
        let reply = try await database.sampleReply(shape)
        for shards in shardCounts {
            progress("tenants: \(shards > 0 ? "fair share, \(shards) shards" : "single queue"), "
                + "\(settings.replicas) worker(s), \(settings.messages) heavy commands…")
            modes.append(try await measure(database, shards: shards, relayReply: reply))
        }
        return TenantsReport(
            machine: .current, heavyCommands: settings.messages, lightMerchants: settings.lightMerchants,
            lightRate: settings.lightRate, unloadedSeconds: settings.unloadedSeconds, replicas: settings.replicas,
            prefetch: settings.prefetch, database: database.location.redacted, modes: modes)
    }

    private func measure(_ database: BenchDatabase, shards: Int, relayReply: ReplyRecord) async throws -> TenantsReport.Mode {
        let mode = "tenants\(shards)"
        let topology = BenchTopology(runID: runID, mode: mode, amqpURL: settings.amqpURL,
                                     prefetch: settings.prefetch, fairShareShards: shards)
        let relayQueue = try topology.configuration.amqpConfiguration.tls == nil ? "bench.\(runID).\(mode).relay.commands" : nil
        let heavyPublisher = try topology.session("heavy publisher", logger: logger)
        let lightPublisher = try topology.session("light publisher", logger: logger)
        let receiver = try topology.session("tenants receiver", logger: logger)
        let outcome = await capture {
            try await heavyPublisher.declare(topology.topology)
            let relay = try relayQueue.map { queue in
                // The probes carry their reply-to address, so the exchange and routing key go unused.
                try Relay(configuration: topology.configuration, queue: queue, exchange: "", routingKey: queue,
                          reply: relayReply, contentType: "application/json",
                          executable: Benchmark.besideThisExecutable("customer-worker-relay"), directory: directory, name: "\(mode)-relay")
            }
            if let relayQueue { try await heavyPublisher.declare(Topology(queues: [.quorum(relayQueue)])) }
            try await heavyPublisher.enableConfirms()
            try await lightPublisher.enableConfirms()
            // Direct reply-to: consumed (no-ack) on the channel the light commands are published on, first.
            try await lightPublisher.consume(queue: CommandClient.directReplyTo, noAck: true)
            let heavy = try await database.newMerchant(name: "Heavy merchant")
            let lights = try await lightMerchants(database, topology: topology, heavy: heavy, probe: heavyPublisher)
            // The probes are gone before any worker reads: they would count as nobody's replies.
            for queue in topology.configuration.commandQueues { _ = try await heavyPublisher.purgeQueue(queue) }
            try await receiver.consume(queue: topology.configuration.names.repliesQueue, noAck: true)
            let traffic = Traffic(topology: topology, shape: shape, heavy: heavy, lights: lights, rate: settings.lightRate,
                                  relayQueue: relayQueue, receiver: receiver, directReceiver: lightPublisher)
            // The relay runs through both phases; the run's end stops it (SIGTERM).
            return try await withThrowingTaskGroup(of: TenantsReport.Mode?.self) { group in
                if let relay {
                    group.addTask {
                        try await relay.run()
                        return nil
                    }
                }
                group.addTask {
                    try await run(traffic, topology: topology, database: database,
                                  publishers: (heavyPublisher, lightPublisher), shards: shards)
                }
                defer { group.cancelAll() }
                for try await case let result? in group { return result }
                throw BenchmarkError.relayFailed("the no-op relay beside the tenants run ended on its own")
            }
        }
        await heavyPublisher.close()
        await lightPublisher.close()
        await receiver.close()
        await topology.deleteQueues(logger: logger, also: relayQueue.map { [$0] } ?? [])
        return try outcome.get()
    }

    /// The light merchants; under fair share, each outside the heavy merchant's shard.
    private func lightMerchants(_ database: BenchDatabase, topology: BenchTopology, heavy: String,
                                probe session: AMQPSession) async throws -> [String] {
        var lights: [String] = []
        let fairShare = topology.configuration.fairShare
        guard fairShare.isOn else {
            for index in 0..<settings.lightMerchants { lights.append(try await database.newMerchant(name: "Light merchant \(index + 1)")) }
            return lights
        }
        let heavyShard = try await shard(of: heavy, fairShare: fairShare, topology: topology, session: session)
        var candidates = 0
        while lights.count < settings.lightMerchants {
            candidates += 1
            guard candidates <= 8 * settings.lightMerchants + 8 else {
                throw BenchmarkError.setupFailed("\(candidates - 1) new merchants, \(lights.count) outside the heavy merchant's shard")
            }
            let candidate = try await database.newMerchant(name: "Light merchant \(candidates)")
            if try await shard(of: candidate, fairShare: fairShare, topology: topology, session: session) != heavyShard {
                lights.append(candidate)
            }
        }
        return lights
    }

    /// The shard `apiKey`'s commands land in: the one whose count grew when a probe was published.
    private func shard(of apiKey: String, fairShare: FairShare, topology: BenchTopology, session: AMQPSession) async throws -> String {
        var before: [String: UInt32] = [:]
        for queue in fairShare.shardQueues { before[queue] = try await session.messageCount(queue: queue) }
        let probe = topology.command(body: shape.body(.sample, 0), apiKey: apiKey, correlationID: "probe")
        guard try await session.publish([probe]) == [.confirmed] else { throw BenchmarkError.commandRefused("a probe") }
        for queue in fairShare.shardQueues where try await session.messageCount(queue: queue) > before[queue] ?? 0 { return queue }
        throw BenchmarkError.setupFailed("a probe command reached no shard of \(fairShare.exchange)")
    }

    /// Starts the workers, runs `body` while they run (replies taken, a dying worker failing the
    /// run at once), stops them; returns `body`'s result and the workers' CPU seconds.
    private func withFleet<T: Sendable>(_ topology: BenchTopology, database: BenchDatabase, traffic: Traffic,
                                        _ body: @escaping @Sendable () async throws -> T) async throws -> (T, cpuSeconds: Double) {
        let fleet = try WorkerFleet(
            binary: workerBinary, count: settings.replicas,
            environment: topology.workerEnvironment(databaseURL: database.url)
                .merging(settings.databaseSynchronous.map { ["DATABASE_SYNCHRONOUS": $0] } ?? [:]) { $1 }
                .merging(settings.batchLingerMilliseconds.map { ["BATCH_LINGER_MS": "\($0)"] } ?? [:]) { $1 },
            settingNames: WorkerConfiguration.settings.map(\.variable), logDirectory: directory)
        let outcome = await capture {
            try await fleet.open(timeout: .seconds(10))
            try await fleet.waitUntilConnected(brokerPort: try topology.configuration.amqpConfiguration.port, timeout: .seconds(60))
            let result = try await withThrowingTaskGroup(of: T?.self) { group in
                for route in [Traffic.Route.sharedQueue, .direct] {
                    group.addTask {
                        try await traffic.receive(route)
                        return nil
                    }
                }
                group.addTask {
                    try await fleet.watch()
                    return nil
                }
                group.addTask { try await body() }
                defer { group.cancelAll() }
                for try await case let result? in group { return result }
                throw BenchmarkError.setupFailed("the tenants run ended without a result")
            }
            let cpuSeconds = fleet.usage().compactMap(\.cpuSeconds).reduce(0, +)
            try await fleet.stop(timeout: topology.configuration.shutdownTimeout + .seconds(5))
            return (result, cpuSeconds)
        }
        if case .failure = outcome { await fleet.killAll() }
        return try outcome.get()
    }

    private func run(_ traffic: Traffic, topology: BenchTopology, database: BenchDatabase,
                     publishers: (heavy: AMQPSession, light: AMQPSession), shards: Int) async throws -> TenantsReport.Mode {
        let before = try await database.customerCount()
        let settings = settings
        // 1. Unloaded: the light merchants alone.
        let (unloaded, unloadedCPU) = try await withFleet(topology, database: database, traffic: traffic) {
            let sent = try await traffic.sendLight(phase: .unloaded, publisher: publishers.light) { clock, start in
                clock.now - start >= .seconds(settings.unloadedSeconds)
            }
            try await traffic.waitForReplies(sent, timeout: settings.replyTimeout)
            return sent
        }
        // 2. The heavy merchant's commands, all queued while no worker consumes (an import
        // published in bulk): a backlog, whatever the workers' speed.
        try await traffic.sendHeavy(settings.messages, publisher: publishers.heavy)
        // 3. The backlog drains; the light merchants publish at their rate until its last reply.
        let (flood, floodCPU) = try await withFleet(topology, database: database, traffic: traffic) {
            let sent = try await withThrowingTaskGroup(of: Traffic.SentLight?.self) { flood in
                flood.addTask {
                    try await traffic.sendLight(phase: .flood, publisher: publishers.light) { _, _ in traffic.heavyAnswered(settings.messages) }
                }
                flood.addTask {
                    try await traffic.waitForHeavy(settings.messages, timeout: settings.replyTimeout)
                    return nil
                }
                var light = Traffic.SentLight()
                for try await case let sent? in flood { light = sent }
                return light
            }
            try await traffic.waitForReplies(sent, timeout: settings.replyTimeout)
            return sent
        }
        let cpuSeconds = unloadedCPU + floodCPU
        let answered = traffic.answered
        var problems: [String] = []
        let commands = settings.messages + unloaded.commands.count + flood.commands.count
        if answered.extra > 0 { problems.append("\(answered.extra) commands answered more than once") }
        if answered.failed > 0 { problems.append("\(answered.failed) CustomerCreateFailed replies") }
        let customers = try await database.customerCount() - before
        if customers != commands { problems.append("\(customers) customers written for \(commands) commands") }
        let heavy = traffic.heavyArrivals(settings.messages)
        return TenantsReport.Mode(
            shards: shards,
            heavyMessagesPerSecond: Double(settings.messages - 1) / max(1e-9, (heavy.last - heavy.first).seconds),
            heavySeconds: (heavy.last - heavy.first).seconds,
            unloaded: traffic.latencies(unloaded.commands, .direct), flood: traffic.latencies(flood.commands, .direct),
            unloadedSharedQueue: traffic.latencies(unloaded.commands, .sharedQueue),
            floodSharedQueue: traffic.latencies(flood.commands, .sharedQueue),
            relayUnloaded: traffic.latencies(unloaded.probes, .relay), relayFlood: traffic.latencies(flood.probes, .relay),
            workerPartUnloaded: traffic.workerPart(unloaded), workerPartFlood: traffic.workerPart(flood),
            cpuMicrosecondsPerCommand: cpuSeconds * 1e6 / Double(commands), problems: problems)
    }
}

/// The commands of one topology's run and their replies, shared by the senders and the receiver.
private final class Traffic: Sendable {
    enum Phase: String, Sendable {
        case unloaded = "u"
        case flood = "f"
    }

    /// A light command, and when it was due.
    struct Sent: Sendable {
        var id: String
        var due: ContinuousClock.Instant
    }

    /// What one phase of the light senders published: the light merchants' commands, and the
    /// probes for the no-op relay at the same times.
    struct SentLight: Sendable {
        var commands: [Sent] = []
        var probes: [Sent] = []
    }

    /// Where a reply was read: its copy through direct reply-to, its events copy on the shared
    /// replies queue, or the no-op relay's reply to a probe (through direct reply-to too).
    enum Route: Sendable {
        case direct
        case sharedQueue
        case relay

        /// Where the replies read this way are noted.
        var arrivals: WritableKeyPath<Answered, [String: ContinuousClock.Instant]> {
            switch self {
            case .direct: \.directArrivals
            case .sharedQueue: \.arrivals
            case .relay: \.relayArrivals
            }
        }
    }

    struct Answered: Sendable {
        /// Events copies on the shared replies queue, by correlation id: the first arrival.
        var arrivals: [String: ContinuousClock.Instant] = [:]
        /// Light commands' copies through direct reply-to, by correlation id: the first arrival.
        var directArrivals: [String: ContinuousClock.Instant] = [:]
        /// The no-op relay's replies to the probes, by correlation id: the first arrival.
        var relayArrivals: [String: ContinuousClock.Instant] = [:]
        var heavy = 0
        var failed = 0
        var extra = 0
    }

    private static let heavyBatch = 500
    /// The correlation ids of the relay's probes begin with it (the light merchants' with "l",
    /// the heavy merchant's with "h-").
    private static let relayProbePrefix = "r"
    private static let receiveBatch = 32

    let topology: BenchTopology
    let shape: CommandShape
    let heavy: String
    let lights: [String]
    let rate: Double
    /// The no-op relay's command queue, where the probes go; nil: no probes.
    let relayQueue: String?
    private let receiver: AMQPSession
    /// The light merchants' publisher, which also consumes their direct reply-to copies and the
    /// relay's replies to the probes.
    private let directReceiver: AMQPSession
    private let state = Mutex(Answered())
    let clock = ContinuousClock()

    init(topology: BenchTopology, shape: CommandShape, heavy: String, lights: [String], rate: Double, relayQueue: String?,
         receiver: AMQPSession, directReceiver: AMQPSession) {
        self.topology = topology
        self.shape = shape
        self.heavy = heavy
        self.lights = lights
        self.rate = rate
        self.relayQueue = relayQueue
        self.receiver = receiver
        self.directReceiver = directReceiver
    }

    var answered: Answered { state.withLock { $0 } }

    func heavyAnswered(_ count: Int) -> Bool { state.withLock { $0.heavy >= count } }

    /// Waits for the heavy merchant's `count` replies (counted: its ids are many).
    func waitForHeavy(_ count: Int, timeout: Duration) async throws {
        try await wait(for: count, phase: "tenants, heavy merchant", timeout: timeout) { $0.heavy }
    }

    /// Until every command's events copy and its direct reply-to copy, and every probe's relayed
    /// reply, have arrived.
    func waitForReplies(_ sent: SentLight, timeout: Duration) async throws {
        let ids = sent.commands.map(\.id)
        try await wait(for: ids.count, phase: "tenants, light merchants", timeout: timeout) { answered in
            ids.count(where: { answered.arrivals[$0] != nil })
        }
        try await wait(for: ids.count, phase: "tenants, light merchants' direct reply-to copies", timeout: timeout) { answered in
            ids.count(where: { answered.directArrivals[$0] != nil })
        }
        let probes = sent.probes.map(\.id)
        try await wait(for: probes.count, phase: "tenants, the no-op relay's replies", timeout: timeout) { answered in
            probes.count(where: { answered.relayArrivals[$0] != nil })
        }
    }

    /// Until `answered` reaches `expected`; fails after `timeout` without progress.
    private func wait(for expected: Int, phase: String, timeout: Duration, answered: (Answered) -> Int) async throws {
        var progress = (count: -1, at: clock.now)
        while true {
            let count = state.withLock { answered($0) }
            if count >= expected { return }
            if count != progress.count { progress = (count, clock.now) }
            guard clock.now - progress.at < timeout else {
                throw BenchmarkError.repliesMissing(phase: phase, received: count, expected: expected, waited: timeout)
            }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The first and last arrival of the heavy merchant's replies.
    func heavyArrivals(_ count: Int) -> (first: ContinuousClock.Instant, last: ContinuousClock.Instant) {
        state.withLock { answered in
            let arrivals = (0..<count).compactMap { answered.arrivals["h-\($0)"] }
            return (arrivals.min() ?? clock.now, arrivals.max() ?? clock.now)
        }
    }

    func latencies(_ sent: [Sent], _ route: Route) -> TenantsReport.Latency {
        var histogram = LatencyHistogram()
        let arrivals = state.withLock { answered in sent.map { answered[keyPath: route.arrivals][$0.id] } }
        for (command, arrival) in zip(sent, arrivals) {
            if let arrival { histogram.record(arrival - command.due) }
        }
        return TenantsReport.Latency(commands: histogram.count, milliseconds: histogram.count > 0 ? histogram.summary : nil)
    }

    /// Each light command's latency less that of the probe sent with it (same tick, same due
    /// time, same channel): the part of its wait that the broker's floor does not explain.
    func workerPart(_ sent: SentLight) -> TenantsReport.Spread? {
        let (direct, relay) = state.withLock { ($0.directArrivals, $0.relayArrivals) }
        var probeArrivals: [ContinuousClock.Instant: ContinuousClock.Instant] = [:]
        for probe in sent.probes { probeArrivals[probe.due] = relay[probe.id] }
        let differences = sent.commands.compactMap { command -> Double? in
            guard let arrival = direct[command.id], let probeArrival = probeArrivals[command.due] else { return nil }
            return (arrival - probeArrival).seconds * 1000
        }
        return TenantsReport.Spread(differences)
    }

    /// Takes replies from `route` until cancelled, noting the first arrival of each (a second
    /// copy of one reply counts as an extra answer). The events copies also count the heavy
    /// merchant's replies and the failures.
    func receive(_ route: Route) async throws {
        let session = route == .direct ? directReceiver : receiver
        while !Task.isCancelled {
            let batch = try await session.nextDeliveries(maximum: Self.receiveBatch, wait: .milliseconds(100))
            let now = clock.now
            state.withLock { answered in
                for delivery in batch {
                    guard let id = delivery.properties.correlationID, id != "probe" else { continue }
                    let arrivals = route == .direct && id.hasPrefix(Self.relayProbePrefix) ? Route.relay.arrivals : route.arrivals
                    guard answered[keyPath: arrivals][id] == nil else {
                        answered.extra += 1
                        continue
                    }
                    answered[keyPath: arrivals][id] = now
                    guard route == .sharedQueue else { continue }
                    if id.hasPrefix("h-") { answered.heavy += 1 }
                    if delivery.properties.type != ReplyType.customerCreated.rawValue { answered.failed += 1 }
                }
            }
        }
    }

    /// The heavy merchant's commands, published as fast as the broker confirms them.
    func sendHeavy(_ count: Int, publisher: AMQPSession) async throws {
        for start in stride(from: 0, to: count, by: Self.heavyBatch) {
            let messages = (start..<min(count, start + Self.heavyBatch)).map {
                topology.command(body: shape.body(.command, $0), apiKey: heavy, correlationID: "h-\($0)")
            }
            try await publish(messages, publisher)
        }
    }

    /// Each light merchant's commands at `rate`, and a probe for the no-op relay, together until
    /// `done`; returns what was sent and when each was due.
    func sendLight(phase: Phase, publisher: AMQPSession,
                   until done: @Sendable (ContinuousClock, ContinuousClock.Instant) -> Bool) async throws -> SentLight {
        let start = clock.now + .milliseconds(10)
        let interval = Duration.seconds(1 / rate)
        var sent = SentLight()
        var number = 0
        while !done(clock, start) {
            let due = start + interval * number
            try await clock.sleep(until: due)
            var messages = lights.indices.map { index in
                let id = "l\(phase.rawValue)\(index)-\(number)"
                sent.commands.append(Sent(id: id, due: due))
                let commandNumber = (phase == .flood ? 1_000_000 : 0) + number
                return topology.command(body: shape.body(.command, commandNumber), apiKey: lights[index], correlationID: id,
                                        replyTo: CommandClient.directReplyTo)
            }
            if let relayQueue {
                let probe = "\(Self.relayProbePrefix)\(phase.rawValue)-\(number)"
                sent.probes.append(Sent(id: probe, due: due))
                let properties = topology.commandProperties(apiKey: nil, correlationID: probe, replyTo: CommandClient.directReplyTo)
                messages.append(OutgoingMessage(exchange: "", routingKey: relayQueue, body: shape.body(.command, number),
                                                properties: properties))
            }
            try await publish(messages, publisher)
            number += 1
        }
        return sent
    }

    private func publish(_ messages: [OutgoingMessage], _ publisher: AMQPSession) async throws {
        for outcome in try await publisher.publish(messages) where outcome != .confirmed {
            throw BenchmarkError.commandRefused("\(outcome)")
        }
    }
}

/// What `--tenants` measured: per topology, the light merchants' latency alone and beside the
/// heavy merchant's flood, and the heavy merchant's rate.
public struct TenantsReport: Sendable, Codable {
    /// Percentiles (nearest rank) of a few hundred values that may be negative, in milliseconds.
    public struct Spread: Sendable, Codable, Equatable {
        public var count: Int
        public var p50: Double
        public var p99: Double
        public var max: Double

        init(count: Int, p50: Double, p99: Double, max: Double) {
            self.count = count
            self.p50 = p50
            self.p99 = p99
            self.max = max
        }

        /// Nil for no values.
        public init?(_ values: [Double]) {
            guard !values.isEmpty else { return nil }
            let sorted = values.sorted()
            func rank(_ fraction: Double) -> Double { sorted[Swift.max(0, Int((fraction * Double(sorted.count)).rounded(.up)) - 1)] }
            count = sorted.count
            p50 = rank(0.5)
            p99 = rank(0.99)
            max = sorted[sorted.count - 1]
        }
    }

    public struct Latency: Sendable, Codable {
        public var commands: Int
        public var milliseconds: LatencySummary?
    }

    public struct Mode: Sendable, Codable {
        /// 0: the single command queue (fair share off).
        public var shards: Int
        public var heavyMessagesPerSecond: Double
        public var heavySeconds: Double
        /// The light merchants' latency to their direct reply-to copies (what a sender waiting for
        /// its answer sees; the targets' figure).
        public var unloaded: Latency
        public var flood: Latency
        /// The same commands' latency to their events copies on the shared replies queue, read by
        /// the bench's one reader beside the heavy merchant's replies.
        public var unloadedSharedQueue: Latency
        public var floodSharedQueue: Latency
        /// The broker's floor at the same times: probes on a quorum queue of their own, answered
        /// through direct reply-to by a no-op relay (`customer-worker-relay`) with a reply of the
        /// worker's size.
        public var relayUnloaded: Latency
        public var relayFlood: Latency
        /// Each light command's latency less its probe's (sent at the same time): the worker's
        /// own part of the wait, in milliseconds.
        public var workerPartUnloaded: Spread?
        public var workerPartFlood: Spread?
        /// The workers' CPU time over both phases, per command (heavy and light).
        public var cpuMicrosecondsPerCommand: Double
        public var problems: [String]
    }

    public var machine: BenchmarkReport.Machine
    public var heavyCommands: Int
    public var lightMerchants: Int
    public var lightRate: Double
    public var unloadedSeconds: Double
    public var replicas: Int
    public var prefetch: Int
    public var database: String
    public var modes: [Mode]

    public var problems: [String] {
        modes.flatMap { mode in mode.problems.map { "\(mode.shards) shards: \($0)" } }
    }

    /// The issue's targets, each with its figure: met or not (a run that misses one still exits 0).
    public var targets: [(text: String, met: Bool)] {
        guard let fair = modes.first(where: { $0.shards > 0 }), let flood = fair.flood.milliseconds,
              let unloaded = fair.unloaded.milliseconds else { return [] }
        func number(_ value: Double) -> String { String(format: "%.1f", value) }
        var targets = [
            ("light p99 under the flood \(number(flood.p99)) ms ≤ 250 ms", flood.p99 <= 250),
            ("light p99 under the flood \(number(flood.p99)) ms ≤ 3 × unloaded p99 \(number(unloaded.p99)) ms"
                + (fair.relayFlood.milliseconds.map { " (the no-op relay's p99 beside the flood: \(number($0.p99)) ms)" } ?? ""),
             flood.p99 <= 3 * unloaded.p99),
            ("light max under the flood \(number(flood.max)) ms ≤ 1000 ms", flood.max <= 1000),
        ]
        if let single = modes.first(where: { $0.shards == 0 }) {
            let ratio = fair.heavyMessagesPerSecond / single.heavyMessagesPerSecond
            targets.append(("heavy rate with fair share / without \(String(format: "%.2f", ratio)) ≥ 0.9", ratio >= 0.9))
        }
        return targets
    }

    /// The no-op relay's p99 alone and beside the flood, in the fair-share run: what the broker and
    /// the machine add under the flood to a round trip that does no work of the worker's.
    public var floor: String? {
        guard let fair = modes.first(where: { $0.shards > 0 }) ?? modes.first,
              let alone = fair.relayUnloaded.milliseconds, let flood = fair.relayFlood.milliseconds else { return nil }
        return String(format: "p99 %.1f ms alone, %.1f ms beside the flood (%.1f ×)", alone.p99, flood.p99, flood.p99 / max(alone.p99, 1e-9))
    }

    public func json() -> String { reportJSON(self) }

    public var table: String {
        func number(_ value: Double, _ digits: Int) -> String { String(format: "%.\(digits)f", value) }
        func column(_ text: String, _ width: Int) -> String { String(repeating: " ", count: max(0, width - text.count)) + text }
        /// p50, p99 and max (ms), then how many: "-" and 0 for none.
        func figures(_ values: (p50: Double, p99: Double, max: Double)?, count: Int) -> String {
            guard let values else { return column("-", 27) + column("0", 7) }
            return [values.p50, values.p99, values.max].map { column(number($0, 1), 9) }.joined() + column("\(count)", 7)
        }
        func latency(_ latency: Latency) -> String {
            figures(latency.milliseconds.map { ($0.p50, $0.p99, $0.max) }, count: latency.commands)
        }
        func spread(_ spread: Spread?) -> String {
            figures(spread.map { ($0.p50, $0.p99, $0.max) }, count: spread?.count ?? 0)
        }
        var lines = [
            "machine: \(machine.cores) cores, \(number(machine.memoryGiB, 1)) GiB, \(machine.system)",
            "heavy merchant: \(heavyCommands) commands at once; \(lightMerchants) light merchant(s) at \(number(lightRate, 0)) commands/s each "
                + "(\(number(unloadedSeconds, 0)) s alone, then beside the flood); \(replicas) worker(s), prefetch \(prefetch)",
            "database: \(database)",
            "light latency: to the reply through direct reply-to; \"events copies\": to the same reply's copy on the shared replies queue",
            "topology        heavy msg/s   light alone: p50 / p99 / max ms, n   light in the flood: p50 / p99 / max ms, n   CPU µs/cmd",
        ]
        for mode in modes {
            let name = mode.shards > 0 ? "fair, \(mode.shards) shards" : "single queue"
            lines.append(name.padding(toLength: 16, withPad: " ", startingAt: 0) + column(number(mode.heavyMessagesPerSecond, 0), 11)
                + "   " + latency(mode.unloaded) + "           " + latency(mode.flood) + column(number(mode.cpuMicrosecondsPerCommand, 1), 16))
            lines.append("  events copies".padding(toLength: 27, withPad: " ", startingAt: 0)
                + "   " + latency(mode.unloadedSharedQueue) + "           " + latency(mode.floodSharedQueue))
            lines.append("  no-op relay".padding(toLength: 27, withPad: " ", startingAt: 0)
                + "   " + latency(mode.relayUnloaded) + "           " + latency(mode.relayFlood))
            lines.append("  light less relay".padding(toLength: 27, withPad: " ", startingAt: 0)
                + "   " + spread(mode.workerPartUnloaded) + "           " + spread(mode.workerPartFlood))
        }
        if let floor { lines.append("broker's floor (no-op relay, fair-share run): \(floor)") }
        lines += targets.map { "target \($0.met ? "met" : "MISSED"): \($0.text)" }
        return lines.joined(separator: "\n")
    }
}

extension BenchTopology {
    /// A command exactly as `customer-worker publish` sends one: persistent, JSON, the key in a
    /// header. `message_id` is the correlation id with a prefix: `UUID()` reads /dev/urandom each
    /// time, which would make the generator, not the broker, the bottleneck of the ceiling.
    func command(body: [UInt8], apiKey: String, correlationID: String, replyTo: String? = nil) -> OutgoingMessage {
        let names = configuration.names
        return OutgoingMessage(exchange: names.commandExchange, routingKey: names.commandRoutingKey, body: body,
                               properties: commandProperties(apiKey: apiKey, correlationID: correlationID, replyTo: replyTo))
    }

    /// A command's properties; without `apiKey`, no headers (the no-op relay's probes: it reads none).
    func commandProperties(apiKey: String?, correlationID: String, replyTo: String? = nil) -> MessageProperties {
        MessageProperties(
            contentType: "application/json", headers: apiKey.map { ["x-api-key": .string($0)] } ?? [:], persistent: true,
            correlationID: correlationID, replyTo: replyTo, messageID: "bench-\(correlationID)",
            timestamp: UInt64(Date().timeIntervalSince1970), appID: "customer-worker-bench")
    }
}
