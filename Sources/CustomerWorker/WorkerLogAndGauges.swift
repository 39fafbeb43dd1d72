import Logging
import Metrics
import Observability

/// `MetricName.amqpNode{session, node}`: 1 for the broker node each connection uses, 0 for
/// one it used before; a change is logged.
struct NodeGauges {
    private var current: [String: String] = [:]

    mutating func note(consumer: String?, publisher: String?, logger: Logger) {
        for (session, node) in [("consumer", consumer), ("publisher", publisher)] {
            guard let node, current[session] != node else { continue }
            if let previous = current[session] {
                Gauge(label: MetricName.amqpNode, dimensions: [("session", session), ("node", previous)]).record(0)
                logger.notice("AMQP connection moved to another broker node", metadata: [
                    "amqp.session": "\(session)", "amqp.node": "\(node)", "amqp.previous_node": "\(previous)",
                ])
            }
            Gauge(label: MetricName.amqpNode, dimensions: [("session", session), ("node", node)]).record(1)
            current[session] = node
        }
    }
}

/// At most one log line per interval for an event a sender can cause at will.
struct LogInterval {
    let every: Duration
    private var last: ContinuousClock.Instant?
    private var skipped = 0

    init(every: Duration) { self.every = every }

    /// The number of events not logged since the last line when this one is to be logged; nil
    /// when it is to be skipped (and counted).
    mutating func shouldLog(now: ContinuousClock.Instant = .now) -> Int? {
        if let last, now - last < every {
            skipped += 1
            return nil
        }
        defer { last = now; skipped = 0 }
        return skipped
    }
}

