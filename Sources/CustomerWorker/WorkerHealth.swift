import AMQP
import Dispatch
import Synchronization

/// Readiness and liveness of a worker: in-memory flags its executor sets, which probes read
/// without waiting for the worker.
final class WorkerHealth: Sendable {
    private let attached = Atomic<Bool>(false)
    /// Monotonic time of the consume loop's last turn (it turns at least every `CommandWorker.idleTurn` when idle).
    private let lastTurn = Atomic<UInt64>(0)
    /// True while the worker holds commands it cannot commit, or waits for the store to answer.
    private let paused = Atomic<Bool>(false)
    /// Pauses in progress: a pause is a decision, not a hang, so liveness holds while one lasts.
    private let pausing = Atomic<Int>(0)
    /// How long the loop may go without turning before liveness fails, in nanoseconds.
    private let livenessWindow: UInt64

    init(livenessWindow: Duration) {
        let (seconds, attoseconds) = livenessWindow.components
        self.livenessWindow = UInt64(seconds) * 1_000_000_000 + UInt64(attoseconds / 1_000_000_000)
    }

    var isConsuming: Bool { attached.load(ordering: .relaxed) }
    var isPaused: Bool { paused.load(ordering: .relaxed) }

    func setConsuming(_ value: Bool) { attached.store(value, ordering: .relaxed) }
    func setPaused(_ value: Bool) { paused.store(value, ordering: .relaxed) }
    func turned() { lastTurn.store(DispatchTime.now().uptimeNanoseconds, ordering: .relaxed) }

    /// Runs `body` (a deliberate wait) counting as alive, and as a turn when it ends.
    func pausing<T>(_ body: () async throws -> T) async rethrows -> T {
        pausing.add(1, ordering: .relaxed)
        defer {
            turned()
            pausing.subtract(1, ordering: .relaxed)
        }
        return try await body()
    }

    /// Readiness: attached to the queue, both connections open (not reconnecting), the
    /// publisher not blocked by the broker, and not paused by a failing store.
    func isReady(consumer: AMQPSession.Status, publisher: AMQPSession.Status) -> Bool {
        isConsuming && !isPaused && consumer.state.isConnected && publisher.isUsable
    }

    /// Liveness: false when the consume loop has not turned for longer than the longest
    /// legitimate wait the settings allow. Waiting for the broker to come back, or in a pause the
    /// worker decided, counts as alive: a restart would not bring either back sooner.
    func isLive(recovering: Bool) -> Bool {
        if recovering || pausing.load(ordering: .relaxed) > 0 { return true }
        let last = lastTurn.load(ordering: .relaxed)
        return last == 0 || DispatchTime.now().uptimeNanoseconds - last < livenessWindow
    }
}
