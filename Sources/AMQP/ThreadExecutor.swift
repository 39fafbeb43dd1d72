import Dispatch
import Foundation
import Synchronization

/// A serial executor that runs every job on one dedicated OS thread it owns.
///
/// rabbitmq-c connections are not thread-safe and their calls block (socket reads with a
/// timeout), so each connection lives inside an actor whose executor is one of these: the actor
/// gives mutual exclusion, the thread keeps blocking C calls off Swift's cooperative pool, and
/// every call on a connection happens on the same thread.
///
/// `Sendable` by construction: the job queue sits in a `Mutex`, the wake-up is a semaphore.
public final class ThreadExecutor: SerialExecutor, Sendable {
    private let jobs = Mutex<[UnownedJob]>([])
    private let wakeUp = DispatchSemaphore(value: 0)
    private let stopped = Atomic<Bool>(false)

    /// Starts the thread. It runs until `shutdown()`.
    public init(name: String) {
        let thread = Thread { [self] in self.run() }
        thread.name = name
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let unowned = UnownedJob(job)
        jobs.withLock { $0.append(unowned) }
        wakeUp.signal()
    }

    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Lets the thread finish the jobs already queued, then end.
    public func shutdown() {
        stopped.store(true, ordering: .releasing)
        wakeUp.signal()
    }

    private func run() {
        while true {
            wakeUp.wait()
            let batch = jobs.withLock { queued -> [UnownedJob] in
                defer { queued.removeAll(keepingCapacity: true) }
                return queued
            }
            for job in batch {
                job.runSynchronously(on: asUnownedSerialExecutor())
            }
            if batch.isEmpty && stopped.load(ordering: .acquiring) {
                return
            }
        }
    }
}
