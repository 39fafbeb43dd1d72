import AMQP
import ServiceLifecycle

/// The worker's timing, in one place: how long each pause of `BatchMachine` lasts, and the wait
/// itself, ended early by graceful shutdown (swift-service-lifecycle's handler) or cancellation,
/// never by polling.
struct Pacer: Sendable {
    /// Retrying a failing store (`WorkerConfiguration.storeRetryBackoff`).
    var storeRetry: RecoveryPolicy
    /// Publishing replies again (`WorkerConfiguration.transientBackoff`).
    var publishRetry: RecoveryPolicy

    /// When `pause`, beginning `now`, ends.
    func deadline(of pause: BatchMachine.Pause, now: ContinuousClock.Instant) -> ContinuousClock.Instant {
        switch pause {
        case .store(_, let attempt, _, _, _, _, let notAfter):
            // Hand back on time.
            min(now + storeRetry.delay(beforeAttempt: attempt), max(now, notAfter))
        case .conflict(let attempt):
            // Colliding transactions wait a random while, growing, so they do not collide again.
            now + .milliseconds(Int.random(in: 1...(10 * attempt)))
        case .publish(let attempt):
            now + publishRetry.delay(beforeAttempt: attempt)
        case .afterGiveBack:
            now + publishRetry.maximumDelay
        }
    }

    /// Whether graceful shutdown ends `pause` early: a store pause holds commands the worker
    /// gives back when it stops; a publishing pause belongs to a batch the worker finishes.
    static func endsOnShutdown(_ pause: BatchMachine.Pause) -> Bool {
        switch pause {
        case .store, .conflict: true
        case .publish, .afterGiveBack: false
        }
    }

    /// Waits for `pause`; true when it was cut short (graceful shutdown for the pauses it ends, or cancellation).
    func wait(_ pause: BatchMachine.Pause, health: WorkerHealth) async -> Bool {
        let deadline = deadline(of: pause, now: .now)
        return await health.pausing {
            await Self.sleep(until: deadline, endingOnShutdown: Self.endsOnShutdown(pause))
        }
    }

    /// Sleeps until `deadline`; true when cancellation (or, with `endingOnShutdown`, graceful
    /// shutdown) came first.
    static func sleep(until deadline: ContinuousClock.Instant, endingOnShutdown: Bool) async -> Bool {
        do {
            if endingOnShutdown {
                if Task.isShuttingDownGracefully { return true }
                try await cancelWhenGracefulShutdown { try await Task.sleep(until: deadline, clock: .continuous) }
            } else {
                try await Task.sleep(until: deadline, clock: .continuous)
            }
            return false
        } catch {
            return true
        }
    }
}
