import AMQP
import CreateCustomer
import Foundation
import Logging
import Observability
import ServiceLifecycle
import Synchronization
import WorkerTracing

/// Consumes create-customer commands and answers each with a reply.
///
/// Per batch, in this order: one database transaction for the whole batch → replies published and
/// confirmed by the broker → the batch's commands acknowledged. A command is never
/// acknowledged before its reply is confirmed. The next batch's transaction overlaps with the
/// earlier batches' publishing: one batch in the store stage, up to `publishingDepth` waiting
/// for their confirms. Each batch acknowledges exactly its own deliveries (`AMQPSession.ack(_:)`
/// uses `multiple` only where it covers no other unsettled delivery), so batches may finish in
/// any order.
///
/// One command or one outage never hurts the others:
/// - Only the copy to the events exchange gates the ack; a copy to `reply_to` (only to allowed
///   names, see `ReplyToPolicy`) is best effort, sent once, and its failure is counted and logged.
/// - A database that keeps failing pauses the worker (not ready, nothing new taken) with the
///   batch in hand, retried with capped backoff until it recovers: never requeued for that. Held
///   for `HAND_BACK_AFTER`, the commands are handed back unspent (a copy published, the original
///   acknowledged), prefetched ones included, and the worker stops consuming until the store
///   answers: the broker's acknowledgement timeout never meets a held command.
/// - A batch with a redelivery, or failing on a command's own error, is handled one command per
///   transaction; a redelivered command first commits a marker, so the worker that finds markers
///   left by crashes dead-letters that command alone (`HandlingAttempt`).
///
/// What happens to each batch is decided by `BatchMachine` (applying `DeliveryFate`'s table) and
/// carried out by `BatchExecutor`; this type wires the connections, the store and the metrics,
/// takes the batches and overlaps their two phases. Timing is `Pacer`'s, readiness and liveness
/// `WorkerHealth`'s, building and publishing the replies `ReplyPublisher`'s.
///
/// Graceful shutdown (SIGTERM/SIGINT through the ServiceGroup): stop taking commands, finish the
/// batches in hand, close both connections; unread prefetched commands go back to the queue, and
/// so does a batch held while the database was failing.
public final class CommandWorker: Service {
    public let configuration: WorkerConfiguration
    private let consumer: AMQPSession
    private let publisher: AMQPSession
    private let logger: Logger
    private let health: WorkerHealth
    private let nodeGauges = Mutex(NodeGauges())
    /// Builds and publishes each batch's replies, and ends the worker when publishing keeps failing.
    private let replyPublisher: ReplyPublisher
    /// Runs each batch's machine.
    private let executor: BatchExecutor

    /// `tracing`: whether an OpenTelemetry tracer is installed (`TracingBackend.bootstrap`).
    public init(configuration: WorkerConfiguration, store: any CustomerStorage, logger: Logger, tracing: Bool = false) throws(AMQPError) {
        self.configuration = configuration
        let databaseSystem = (try? configuration.databaseLocation).map { location in
            if case .postgres = location { "postgresql" } else { "sqlite" }
        } ?? "sqlite"
        let traces = tracing ? CommandTraces(CommandSpans(queue: configuration.names.commandQueue,
                                                          eventsExchange: configuration.names.eventsExchange,
                                                          databaseSystem: databaseSystem)) : nil
        self.logger = logger
        health = WorkerHealth(livenessWindow: configuration.livenessWindow)
        let nodes = try configuration.amqpNodes.shuffled()  // once: both connections start on the same node
        let host = ProcessInfo.processInfo.hostName
        let pid = ProcessInfo.processInfo.processIdentifier
        func named(_ role: String) -> [ConnectionConfiguration] {
            nodes.map { var node = $0; node.connectionName = "customer-worker \(host) \(pid) \(role)"; return node }
        }
        consumer = AMQPSession(nodes: named("consumer"), order: .asGiven, recovery: configuration.reconnect, logger: logger, name: "consumer")
        publisher = AMQPSession(nodes: named("publisher"), order: .asGiven, recovery: configuration.reconnect, logger: logger, name: "publisher")
        let metrics = WorkerMetrics()
        replyPublisher = ReplyPublisher(publisher: publisher, configuration: configuration, metrics: metrics, traces: traces, logger: logger)
        executor = BatchExecutor(configuration: configuration, store: store, consumer: consumer, publisher: publisher, metrics: metrics,
                                 traces: traces, health: health, replyPublisher: replyPublisher, logger: logger)
    }

    /// True while the consumer is attached to the command queue.
    public var isConsuming: Bool { health.isConsuming }

    /// True while the store keeps failing and the worker holds its batch instead of taking more.
    public var isPaused: Bool { health.isPaused }

    /// Readiness (`WorkerHealth.isReady`). Reads only published state, so a probe never waits for the worker.
    public var isReady: Bool { health.isReady(consumer: consumer.status, publisher: publisher.status) }

    /// What `/readyz` adds to its answer: the broker node of each connection, and why the worker
    /// is not ready when it is paused or blocked.
    public var readinessDetail: String {
        let (consumerStatus, publisherStatus) = (consumer.status, publisher.status)
        var parts = ["consumer node: \(consumerStatus.node ?? "none")", "publisher node: \(publisherStatus.node ?? "none")"]
        if publisherStatus.isBlocked { parts.append("publishing blocked by the broker") }
        if isPaused { parts.append("paused: the database keeps failing") }
        return parts.joined(separator: ", ")
    }

    /// Liveness (`WorkerHealth.isLive`).
    public var isLive: Bool { health.isLive(recovering: consumer.isRecovering || publisher.isRecovering) }

    public func run() async throws {
        try await start()
        defer { health.setConsuming(false) }
        do {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                tasks.addTask { try await self.consumeUntilShutdown() }
                tasks.addTask { try await self.replyPublisher.watch() }
                try await tasks.next()
                tasks.cancelAll()
            }
        } catch {
            await closeSessions()
            throw error
        }
        await closeSessions()
        logger.info("worker stopped")
    }

    private func start() async throws {
        try await FairShare.declare(configuration.topology, on: consumer)
        // Remembered by the publisher, so it declares again what it publishes to after every
        // reconnect (an events exchange deleted while the worker runs comes back).
        try await publisher.declare(replyTopology)
        try await consumer.setPrefetch(UInt16(configuration.prefetch))
        try await publisher.enableConfirms()
        try await consumeCommandQueues()
        health.setConsuming(true)
        logger.info("worker consuming", metadata: [
            "amqp.queue": "\(configuration.names.commandQueue)", "prefetch": "\(configuration.prefetch)",
            "fair_share.shards": "\(configuration.fairShareShards)",
            "amqp.node": "\(consumer.status.node ?? "")",
        ])
    }

    /// One consumer per queue of `WorkerConfiguration.commandQueues`, each with its own prefetch
    /// window (`FairShare`).
    private func consumeCommandQueues() async throws {
        for queue in configuration.commandQueues { try await consumer.consume(queue: queue) }
    }

    private func closeSessions() async {
        await consumer.close()
        await publisher.close()
    }

    /// The longest the consume loop waits for a command while idle before it turns anyway: a turn
    /// is the loop's heartbeat for liveness (`WorkerHealth`) and when reconnects and broker nodes
    /// are counted. It is not how shutdown is noticed (a handler ends the wait at once).
    static let idleTurn: Duration = .seconds(1)

    /// Batches in their publish phase at once. With one, a stored batch waited for the last
    /// one's confirms before publishing its own replies (4.5 ms at the median and 9 ms at p90 of a
    /// light merchant's 26 ms under a flood, BENCHMARKS.md), and the store stage waited with it;
    /// with two, a quiet lane's short batch still waited when a busy lane's two were publishing
    /// (7 ms at p99). The prefetch windows bound the deliveries in hand (at the default, two full
    /// batches a busy lane); this bounds the batches, short ones included.
    static let publishingDepth = 4

    /// Takes batches and runs each through its machine: the store phase here, then the publish
    /// phase in a child task, overlapping the next batch's store phase (one batch storing, up to
    /// `publishingDepth` publishing).
    private func consumeUntilShutdown() async throws {
        try await withThrowingTaskGroup(of: Void.self) { publishing in
            var batchesPublishing = 0
            var generation = await consumer.generation
            while !Task.isShuttingDownGracefully, !Task.isCancelled {
                health.turned()
                // Graceful shutdown ends the wait through its handler, cancellation through the
                // session's own handler: neither is polled. The bound is the loop's idle turn.
                let consumer = consumer
                let deliveries = try await withGracefulShutdownHandler {
                    try await consumer.nextDeliveries(maximum: configuration.batchLimit, wait: Self.idleTurn, linger: configuration.batchLinger)
                } onGracefulShutdown: {
                    consumer.endDeliveryWaits()
                }
                await noteReconnects(&generation)
                guard !deliveries.isEmpty else { continue }
                let received = ContinuousClock.now
                var machine = executor.begin(deliveries)
                let awaitStore = await executor.runStorePhase(&machine)
                if machine.hasReplies {
                    if batchesPublishing == Self.publishingDepth {
                        try await publishing.next()
                        batchesPublishing -= 1
                    }
                    batchesPublishing += 1
                    let (stored, executor) = (machine, executor)
                    publishing.addTask { await executor.runPublishPhase(stored, received: received) }
                }
                if awaitStore, await executor.waitForTheStore() {
                    try await consumeCommandQueues()
                    health.setConsuming(true)
                    logger.notice("worker consuming again", metadata: ["amqp.queue": "\(configuration.names.commandQueue)"])
                }
            }
            try await publishing.waitForAll()
        }
    }

    private func noteReconnects(_ generation: inout UInt64) async {
        let current = await consumer.generation
        if current != generation {
            executor.metrics.reconnects.increment(by: Int(current - generation))
            generation = current
        }
        nodeGauges.withLock { $0.note(consumer: consumer.status.node, publisher: publisher.status.node, logger: logger) }
    }

    /// The events exchange, the replies queue and their binding: what the publisher needs.
    private var replyTopology: Topology {
        let all = configuration.topology
        let events = configuration.names.eventsExchange
        return Topology(exchanges: all.exchanges.filter { $0.name == events },
                        queues: all.queues.filter { $0.name == configuration.names.repliesQueue },
                        bindings: all.bindings.filter { $0.exchange == events })
    }

}
