import Foundation
import Logging

/// Everything one session's event loop owns: the rabbitmq-c connection, the lifecycle state
/// machine, the confirm tracker, the remembered set-up, the deliveries not handed out yet, and
/// the callers waiting for them or for their publishes. Lives on the loop's thread only (it is
/// created there and reached through `EventLoop.submit`), so none of it needs a lock.
final class SessionCore {
    private let nodes: [ConnectionConfiguration]
    private let recovery: RecoveryPolicy
    private var logger: Logger
    private let publishStatus: (AMQPSession.Status) -> Void

    private var machine: ConnectionStateMachine
    private var rotation: NodeRotation
    private var connection: AMQPConnection?
    private var finished = false
    private var reconnectAt: ContinuousClock.Instant?

    // What to replay after a reconnect.
    var topology = Topology()
    /// Queues already logged as kept the way an earlier version declared them.
    private var loggedKeptQueues: Set<String> = []
    var prefetch: UInt16?
    var confirms = false
    var consumers: [AMQPSession.Consumer] = [] {
        didSet {
            for consumer in consumers {
                queueOfConsumer[consumer.consumerTag] = consumer.queue
                if consumer.noAck { noAckConsumers.insert(consumer.consumerTag) }
            }
            lastConsumer = nil
        }
    }
    /// The last delivery's consumer and its queue and acknowledgement mode: deliveries come in
    /// runs from one consumer, and its tag (the same `String` storage, `RecentString`) compares
    /// at once where looking it up hashed it (~600 instructions a delivery).
    private var lastConsumer: (tag: String, queue: String?, acknowledged: Bool)?
    /// The queue of every consumer started on this session, cancelled ones included (deliveries
    /// read after a cancel still name their queue).
    private var queueOfConsumer: [String: String] = [:]
    /// Consumers whose deliveries need no acknowledgement (cancelled ones included).
    private var noAckConsumers: Set<String> = []

    /// Requests that need the connection, held while (re)connecting.
    private var parked: [(run: () -> Void, fail: (AMQPError) -> Void)] = []

    private var deliveries = DeliveryLanes()
    /// What the current channel delivered for acknowledgement and nobody settled yet.
    private var unsettled = UnsettledTags()
    private var waiters: [DeliveryWaiter] = []
    /// Set by `endWaits`: every wait for deliveries ends at once with what arrived.
    private var waitsEnded = false

    var tracker = ConfirmTracker()
    private var publishes: [UInt64: PublishRequest] = [:]
    /// Requests with messages to write, in arrival order.
    private var writeQueue: [UInt64] = []
    private var nextRequestID: UInt64 = 1

    /// Frames handled per turn before the loop looks at its task queue again.
    private static let readBudget = 512
    private static let confirmWait = "waiting for publisher confirms"

    init(nodes: [ConnectionConfiguration], recovery: RecoveryPolicy, logger: Logger,
         publishStatus: @escaping (AMQPSession.Status) -> Void) {
        self.nodes = nodes
        self.recovery = recovery
        self.logger = logger
        self.publishStatus = publishStatus
        machine = ConnectionStateMachine(maximumRounds: recovery.maximumAttempts)
        rotation = NodeRotation(count: nodes.count)
    }

    // MARK: The loop

    func run(on loop: EventLoop) {
        while !finished {
            for task in loop.takeTasks() { task(self) }
            if finished { break }
            let moreInput = readAvailable()
            let now = ContinuousClock.now
            fireTimers(now)
            serviceWaiters(now)
            if moreInput || loop.hasTasks { continue }
            loop.wait(socket: connection?.socketDescriptor ?? -1, timeout: nextWakeUp(after: now) - now)
        }
        connection = nil
    }

    /// Handles what already arrived; true when it stopped at its budget with more to read.
    private func readAvailable() -> Bool {
        for _ in 0..<Self.readBudget {
            guard let connection else { return false }
            do {
                switch try connection.readAvailable() {
                case .nothing: return false
                case .skipped: continue
                case .event(let event): try dispatch(event)
                }
            } catch {
                lost(error)
                return false
            }
        }
        return true
    }

    private func dispatch(_ event: InboundEvent) throws(AMQPError) {
        switch event {
        case .delivery(let tag, let consumerTag, let redelivered, let exchange, let routingKey, let body, let properties):
            let consumer = consumerOf(consumerTag)
            deliveries.append(Delivery(tag: DeliveryTag(connectionGeneration: machine.generation, value: tag), consumerTag: consumerTag,
                                       queue: consumer.queue, redelivered: redelivered, exchange: exchange,
                                       routingKey: routingKey, body: body, properties: properties, receivedAt: .now))
            if consumer.acknowledged { unsettled.delivered(tag) }
        case .ack(let tag, let multiple):
            settled(tracker.acked(tag, multiple: multiple))
        case .nack(let tag, let multiple):
            settled(tracker.nacked(tag, multiple: multiple))
        case .returned(let code, let text, let exchange, let routingKey, let properties):
            tracker.returned(exchange: exchange, routingKey: routingKey, messageID: properties.messageID, replyCode: code, replyText: text)
        case .consumerCancelled(let consumerTag):
            // Queue deleted or its leader moved: reconnecting re-declares and consumes again.
            throw .consumerCancelledByBroker(consumerTag: consumerTag)
        case .blocked(let reason):
            transition(machine.blockedByBroker(reason: reason))
            logger.warning("broker blocked publishing on this connection", metadata: ["amqp.reason": "\(reason)"])
        case .unblocked:
            logger.notice("broker unblocked publishing on this connection")
            transition(machine.unblockedByBroker())
        }
    }

    /// The queue of the consumer `tag` and whether its deliveries are acknowledged.
    private func consumerOf(_ tag: String) -> (queue: String?, acknowledged: Bool) {
        if let lastConsumer, lastConsumer.tag == tag { return (lastConsumer.queue, lastConsumer.acknowledged) }
        let found = (queue: queueOfConsumer[tag], acknowledged: !noAckConsumers.contains(tag))
        lastConsumer = (tag, found.queue, found.acknowledged)
        return found
    }

    private func fireTimers(_ now: ContinuousClock.Instant) {
        if let connection {
            let heartbeat = connection.heartbeat
            if heartbeat > .zero, now - connection.lastWrite >= heartbeat / 2 {
                do { try connection.sendHeartbeat() } catch { lost(error) }
            }
        }
        if let reconnectAt, now >= reconnectAt {
            self.reconnectAt = nil
            connectRound(movingOn: true)
        }
        var expired: [UInt64] = []
        for (id, request) in publishes where request.deadline <= now { expired.append(id) }
        for id in expired {
            guard let request = publishes.removeValue(forKey: id) else { continue }
            tracker.forget(request: id)
            writeQueue.removeAll { $0 == id }
            request.promise.fail(.timeout(operation: Self.confirmWait))
        }
    }

    private func nextWakeUp(after now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        var wakeUp = now + .seconds(1)
        if let connection, connection.heartbeat > .zero { wakeUp = min(wakeUp, connection.lastWrite + connection.heartbeat / 2) }
        if let reconnectAt { wakeUp = min(wakeUp, reconnectAt) }
        if let waiter = waiters.first { wakeUp = min(wakeUp, waiter.lingerDeadline ?? waiter.deadline) }
        for request in publishes.values { wakeUp = min(wakeUp, request.deadline) }
        return max(wakeUp, now)
    }

    // MARK: Requests

    /// Runs `run` once the connection is open: now, after connecting (once, for a session that
    /// is not connected), or after recovery (parked meanwhile). `fail` gets the error otherwise.
    private func whenOpen(_ fail: @escaping (AMQPError) -> Void, _ run: @escaping () -> Void) {
        let retry = { [unowned self] in self.whenOpen(fail, run) }
        switch machine.requestArrived() {
        case .run:
            run()
        case .connect:
            parked.append((run: retry, fail: fail))
            connectRound(movingOn: false)
        case .park:
            parked.append((run: retry, fail: fail))
        case .fail(let error):
            fail(error)
        default:
            fail(.sessionClosed)
        }
    }

    /// Runs `work` on the open connection (see `whenOpen`) and answers `promise` with its result.
    ///
    /// With `againWhenCutOff`, a `work` whose connection died under it (the broker did not answer
    /// within the RPC timeout, or the socket broke: no refusal) runs again once the session is
    /// open again, as the session's replay would have run it had it finished a moment earlier.
    /// For set-up that is the same done twice (declare, prefetch, confirms, consume): a worker
    /// starting beside a slow broker waits for it instead of stopping (a `consume-ok` queued behind
    /// the encoding of 20,000-level headers came after the 30 s timeout in a CI run on 2026-12-07).
    /// The recovery policy bounds it like any reconnect: `failParked` ends it when reconnecting gives up.
    func withConnection<T: Sendable>(_ promise: Promise<T>, againWhenCutOff: Bool = false,
                                      _ work: @escaping (AMQPConnection) throws(AMQPError) -> T) {
        whenOpen({ promise.fail($0) }) { [unowned self] in
            guard let connection = self.connection else { return promise.fail(.sessionClosed) }
            do throws(AMQPError) {
                promise.succeed(try work(connection))
            } catch {
                guard !connection.isUsable else { return promise.fail(error) }
                self.lost(error)
                if againWhenCutOff && error.isCutOff {
                    self.logger.warning("AMQP set-up cut off with its connection; doing it again once connected",
                                        metadata: ["error": "\(error)"])
                    self.withConnection(promise, againWhenCutOff: true, work)
                } else {
                    promise.fail(error)
                }
            }
        }
    }

    func awaitDeliveries(_ waiter: DeliveryWaiter) {
        let wait = { [unowned self] in
            self.waiters.append(waiter)
            self.serviceWaiters(.now)
        }
        switch machine.state {
        case .idle: whenOpen({ waiter.promise.fail($0) }, wait)  // connect for this caller first
        case .closed: waiter.promise.fail(.sessionClosed)
        default: wait()  // while recovering too: the wait ends empty at its deadline
        }
    }

    /// Hands deliveries to waiters whose batch is complete, whose linger ran out, or whose wait
    /// ended empty.
    private func serviceWaiters(_ now: ContinuousClock.Instant) {
        while var waiter = waiters.first {
            if deliveries.isEmpty {
                guard waitsEnded || now >= waiter.deadline else { return }
            } else if !waitsEnded && (deliveries.count < waiter.maximum) && (waiter.linger > .zero) {
                let lingerDeadline = waiter.lingerDeadline ?? now + waiter.linger
                if now < lingerDeadline {
                    waiter.lingerDeadline = lingerDeadline
                    waiters[0] = waiter
                    return
                }
            }
            waiters.removeFirst()
            waiter.promise.succeed(deliveries.take(waiter.maximum))
        }
    }

    /// Cancels every consumer (`basic.cancel`; none is started again after a reconnect), reads
    /// what the broker sent before its cancel-ok (deliveries in flight), and answers with every
    /// delivery not handed out yet: still unacknowledged, the caller's to settle. While the
    /// connection is not open, the consumers are just forgotten (the broker requeued what the
    /// lost channel held) and nothing is held.
    func stopConsuming(_ promise: Promise<[Delivery]>) {
        guard machine.isOpen, let connection else {
            consumers.removeAll()
            _ = deliveries.removeAll()
            unsettled.reset()
            return promise.succeed([])
        }
        let cancelling = consumers
        consumers.removeAll()
        do {
            for consumer in cancelling { try connection.cancel(consumerTag: consumer.consumerTag) }
        } catch {
            // The channel is gone with what it delivered: the broker requeues it.
            if !connection.isUsable { lost(error) }
            _ = deliveries.removeAll()
            return promise.fail(error)
        }
        // Deliveries that came before the cancel-ok were queued by rabbitmq-c during the RPC.
        while readAvailable() {}
        promise.succeed(deliveries.removeAll())
    }

    func settle(_ tag: DeliveryTag, multiple: Bool, _ operation: String, _ promise: Promise<Bool>,
                _ body: (AMQPConnection) throws(AMQPError) -> Void) {
        guard tag.connectionGeneration == machine.generation, machine.isOpen, let connection else {
            logger.debug("not settling a delivery from a closed channel", metadata: [
                "amqp.operation": "\(operation)", "amqp.delivery_generation": "\(tag.connectionGeneration)",
            ])
            return promise.succeed(false)
        }
        do {
            try body(connection)
            unsettled.settled(tag.value, multiple: multiple)
            promise.succeed(true)
        } catch {
            logger.warning("settling failed; the broker will redeliver", metadata: ["amqp.operation": "\(operation)", "error": "\(error)"])
            lost(error)
            promise.succeed(false)
        }
    }

    /// Acknowledges exactly `tags` (of the current connection; earlier ones are void): with
    /// `multiple` where that covers no other unsettled delivery (`UnsettledTags`), else one by one.
    func acknowledge(_ tags: [DeliveryTag], _ promise: Promise<Bool>) {
        let current = tags.filter { $0.connectionGeneration == machine.generation }
        guard !current.isEmpty, machine.isOpen, let connection else {
            logger.debug("not acknowledging deliveries from a closed channel", metadata: ["amqp.deliveries": "\(tags.count)"])
            return promise.succeed(false)
        }
        let plan = unsettled.acknowledge(current.map(\.value))
        do {
            if let upTo = plan.upTo { try connection.ack(upTo, multiple: true) }
            for tag in plan.singles { try connection.ack(tag, multiple: false) }
            promise.succeed(current.count == tags.count)
        } catch {
            logger.warning("settling failed; the broker will redeliver", metadata: ["amqp.operation": "basic.ack", "error": "\(error)"])
            lost(error)
            promise.succeed(false)
        }
    }

    func publish(_ request: PublishRequest) {
        switch machine.state {
        case .idle: whenOpen({ request.promise.fail($0) }) { [unowned self] in self.register(request) }
        case .closed: request.promise.fail(.sessionClosed)
        default: register(request)  // written now, or when the connection is open and unblocked
        }
    }

    private func register(_ request: PublishRequest) {
        precondition(confirms, "enableConfirms() before publish(_:)")
        let id = nextRequestID
        nextRequestID += 1
        publishes[id] = request
        writeQueue.append(id)
        writePending()
    }

    /// Writes what waits, unless the connection is not open or the broker blocks us.
    private func writePending() {
        guard case .open = machine.state, let connection, !writeQueue.isEmpty else { return }
        writeQueued(on: connection)
        // One write for all of them; a failure re-queues every one the broker did not confirm.
        do { try connection.flush() } catch { lost(error) }
    }

    private func writeQueued(on connection: AMQPConnection) {
        while let id = writeQueue.first {
            writeQueue.removeFirst()
            guard let request = publishes[id] else { continue }
            let indices = request.unwritten
            request.unwritten = []
            for index in indices {
                let message = request.messages[index]
                do {
                    try connection.publish(message)
                } catch .unencodable(_, let reason) {
                    // This message's own failure: nothing was written, the others go on.
                    unencodable(request, id: id, index: index, reason: reason)
                    continue
                } catch {
                    // This one and the rest go again after the reconnect (with those written
                    // before it and not confirmed).
                    request.unwritten = Array(indices[indices.firstIndex(of: index)!...])
                    writeQueue.insert(id, at: 0)
                    lost(error)
                    return
                }
                tracker.published(.init(request: id, index: index, exchange: message.exchange, routingKey: message.routingKey,
                                        messageID: message.properties.messageID))
            }
        }
    }

    private func unencodable(_ request: PublishRequest, id: UInt64, index: Int, reason: String) {
        logger.warning("message not published: it cannot be encoded", metadata: [
            "amqp.routing_key": "\(request.messages[index].routingKey.prefix(255))", "error": "\(reason)",
        ])
        settled([ConfirmTracker.Settlement(request: id, index: index, outcome: .unencodable(reason: reason))])
    }

    private func settled(_ settlements: [ConfirmTracker.Settlement]) {
        for settlement in settlements {
            guard let request = publishes[settlement.request], request.outcomes[settlement.index] == nil else { continue }
            request.outcomes[settlement.index] = settlement.outcome
            request.unsettled -= 1
            if request.unsettled == 0 {
                publishes.removeValue(forKey: settlement.request)
                request.promise.succeed(request.outcomes.map { $0! })
            }
        }
    }

    func close() {
        transition(machine.closeRequested())
    }

    /// Every wait for deliveries, now and from now on, answers at once with what arrived
    /// (`AMQPSession.endDeliveryWaits`).
    func endWaits() {
        waitsEnded = true
        serviceWaiters(.now)
    }

    /// The task behind the call with `token` was cancelled: a waiter gets what arrived so far, a
    /// publish fails with `cancelled` (its confirms, if they come, are ignored).
    func cancel(_ token: UInt64) {
        if let index = waiters.firstIndex(where: { $0.token == token }) {
            let waiter = waiters.remove(at: index)
            waiter.promise.succeed(deliveries.take(waiter.maximum))
        }
        if let (id, request) = publishes.first(where: { $0.value.token == token }) {
            publishes.removeValue(forKey: id)
            tracker.forget(request: id)
            writeQueue.removeAll { $0 == id }
            request.promise.fail(.cancelled(operation: Self.confirmWait))
        }
    }

    // MARK: Connecting and losing the connection

    /// Tries every node once, starting with the one after the node in use when `movingOn`.
    private func connectRound(movingOn: Bool) {
        var lastError = AMQPError.connectionFailed(endpoint: "", reason: "no broker node")
        for index in rotation.round(movingOn: movingOn) {
            let node = nodes[index]
            logger[metadataKey: "amqp.node"] = .string(node.endpoint)
            do {
                let fresh = try AMQPConnection(configuration: node)
                try replaySetup(on: fresh)
                connection = fresh
                rotation.use(index)
                transition(machine.connected())
                return
            } catch {
                lastError = error
                if nodes.count > 1 {
                    logger.warning("cannot use broker node", metadata: ["error": "\(error)"])
                }
            }
        }
        transition(machine.connectFailed(lastError))
    }

    /// Declares the remembered topology, sets prefetch and confirm mode, and starts the consumers
    /// again. A declaration the broker refuses (e.g. a classic queue whose home node is down in a
    /// cluster, or an exchange the user may no longer configure) is logged and skipped on a
    /// reopened channel: what depends on it fails where it is used, not the whole reconnect.
    private func replaySetup(on connection: AMQPConnection) throws(AMQPError) {
        var steps: [(String, (AMQPConnection) throws(AMQPError) -> Void)] = []
        for exchange in topology.exchanges { steps.append(("exchange \(exchange.name)", { c throws(AMQPError) in try c.declare(exchange) })) }
        for queue in topology.queues { steps.append(("queue \(queue.name)", { c throws(AMQPError) in _ = try c.declare(queue) })) }
        for binding in topology.bindings {
            steps.append(("binding of \(binding.queue) to \(binding.exchange)", { c throws(AMQPError) in try c.bind(binding) }))
        }
        for binding in topology.exchangeBindings {
            steps.append(("binding of \(binding.destination) to \(binding.source)", { c throws(AMQPError) in try c.bind(binding) }))
        }
        for binding in topology.removedBindings {
            steps.append(("removal of the binding of \(binding.queue) to \(binding.exchange)", { c throws(AMQPError) in try c.remove(binding) }))
        }
        for binding in topology.removedExchangeBindings {
            steps.append(("removal of the binding of \(binding.destination) to \(binding.source)", { c throws(AMQPError) in
                try c.remove(binding)
            }))
        }
        for (what, step) in steps {
            do {
                try step(connection)
            } catch .channelClosedByBroker(let operation, let code, let text) {
                logger.error("cannot declare \(what) again; carrying on without it", metadata: [
                    "amqp.operation": "\(operation)", "amqp.reply_code": "\(code)", "amqp.reply_text": "\(text)",
                ])
                try connection.reopenChannel()
            }
        }
        noteQueuesKeptAsDeclaredEarlier(connection)
        if let prefetch { try connection.setPrefetch(prefetch) }
        if confirms { try connection.enableConfirms() }
        for consumer in consumers {
            _ = try connection.consume(queue: consumer.queue, consumerTag: consumer.consumerTag, noAck: consumer.noAck,
                                       exclusive: consumer.exclusive, arguments: consumer.arguments)
        }
    }

    /// Logs (once per queue and session) a queue the broker has as an earlier version declared
    /// it: the worker runs with it, and the operator learns how to move it.
    func noteQueuesKeptAsDeclaredEarlier(_ connection: AMQPConnection) {
        for name in connection.keptAsDeclaredEarlier.subtracting(loggedKeptQueues).sorted() {
            loggedKeptQueues.insert(name)
            logger.warning("queue exists with the arguments of an earlier version; kept as it is", metadata: [
                "amqp.queue": "\(name)",
                "hint": "docs/operations.md, Supported versions: delete it when empty and the worker declares it anew",
            ])
        }
    }

    private func lost(_ error: AMQPError) {
        transition(machine.connectionLost(error))
    }

    private func transition(_ action: ConnectionStateMachine.Action) {
        defer { publishStatus(status) }
        switch action {
        case .none, .run, .connect, .park:
            break
        case .fail(let error):
            failParked(error)
        case .resume(let generation, let recovered):
            if recovered {
                logger.notice("AMQP connection recovered", metadata: ["amqp.generation": "\(generation)"])
            } else {
                logger.debug("AMQP connection open", metadata: ["amqp.generation": "\(generation)"])
            }
            let waiting = parked
            parked = []
            for request in waiting { request.run() }
            writePending()
        case .scheduleReconnect(let round, let error):
            if round == 1 { dropConnection(after: error) }
            else { logger.warning("AMQP reconnect failed", metadata: ["amqp.round": "\(round - 1)", "error": "\(error)"]) }
            reconnectAt = .now + recovery.delay(beforeAttempt: round)
        case .failWaiting(let error):
            logger.error("AMQP reconnecting gave up", metadata: ["error": "\(error)"])
            failEverything(error)
        case .flushPublishes:
            writePending()
        case .closeConnection:
            connection?.close()
            connection = nil
            reconnectAt = nil
            failEverything(.sessionClosed)
            finished = true
        }
    }

    /// The channel is gone: what it delivered is void (the broker requeues it), and what it did not
    /// confirm is written again on the next one, unless the broker keeps refusing it.
    private func dropConnection(after error: AMQPError) {
        logger.warning("AMQP connection lost; reconnecting", metadata: ["error": "\(error)"])
        connection = nil
        _ = deliveries.removeAll()
        unsettled.reset()
        var touched: [UInt64] = []
        for pending in tracker.reset() {
            guard let request = publishes[pending.request] else { continue }
            if touched.last != pending.request, !touched.contains(pending.request) { touched.append(pending.request) }
            request.unwritten.append(pending.index)
        }
        // Channel errors that reconnecting cannot heal: access refused, not found (an exchange gone),
        // resource locked, precondition failed (e.g. direct reply-to without its consumer).
        let refused: Bool = if case .channelClosedByBroker(_, let code, _) = error { [403, 404, 405, 406].contains(code) } else { false }
        for id in touched {
            guard let request = publishes[id] else { continue }
            request.unwritten.sort()
            request.losses += 1
            if refused { request.channelErrors += 1 }
            let exhausted = refused ? request.channelErrors >= recovery.channelErrorAttempts
                : recovery.maximumAttempts.map { request.losses > $0 } ?? false
            if exhausted {
                publishes.removeValue(forKey: id)
                writeQueue.removeAll { $0 == id }
                logger.error("publishing failed for good", metadata: ["error": "\(error)", "attempt": "\(request.losses)"])
                request.promise.fail(error)
            } else if !writeQueue.contains(id) {
                writeQueue.append(id)
            }
        }
        writeQueue.sort()
    }

    private func failParked(_ error: AMQPError) {
        let waiting = parked
        parked = []
        for request in waiting { request.fail(error) }
    }

    private func failEverything(_ error: AMQPError) {
        failParked(error)
        let waiting = waiters
        waiters = []
        for waiter in waiting { waiter.promise.fail(error) }
        let requests = publishes
        publishes = [:]
        writeQueue = []
        _ = tracker.reset()
        for request in requests.values { request.promise.fail(error) }
        _ = deliveries.removeAll()
        unsettled.reset()
    }

    private var status: AMQPSession.Status {
        AMQPSession.Status(state: machine.state, generation: machine.generation, reconnects: machine.reconnects,
                           node: connection.map { _ in nodes[rotation.current].endpoint })
    }
}
