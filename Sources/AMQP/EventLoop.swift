import Foundation
import Synchronization

/// One thread that owns a value (a session's `SessionCore`) and runs the tasks submitted to it, one at a
/// time, in order; between tasks it waits in `poll()` on a wake-up pipe and on the socket the
/// owned value names (the thread + wake-up pattern of swift-nio's `SelectableEventLoop`).
///
/// `Owned` is created on the thread and never leaves it: tasks get it as a parameter. That is
/// what keeps a rabbitmq-c connection on one thread while any task may submit work to it.
///
/// `Sendable`: the task queue sits in a `Mutex`; the pipe's descriptors are immutable and
/// `write`/`read` on them are thread-safe.
final class EventLoop: Sendable {
    typealias Owned = SessionCore
    typealias Task = @Sendable (Owned) -> Void

    private struct Inbox {
        var tasks: [Task] = []
        var accepting = true
        /// A byte is in the pipe (or about to be): no need to write another.
        var wakePending = false
    }

    private let inbox = Mutex(Inbox())
    private let wakeRead: Int32
    private let wakeWrite: Int32

    /// Starts the thread; `make` builds the owned value on it.
    init(name: String, make: @escaping @Sendable () -> Owned) {
        var descriptors: [Int32] = [-1, -1]
        let created = pipe(&descriptors)
        precondition(created == 0, "cannot create the event loop's wake-up pipe (errno \(errno))")
        for descriptor in descriptors {
            _ = fcntl(descriptor, F_SETFL, fcntl(descriptor, F_GETFL) | O_NONBLOCK)
            _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        }
        wakeRead = descriptors[0]
        wakeWrite = descriptors[1]
        let thread = Thread { [self] in
            let owned = make()
            owned.run(on: self)
            // Tasks that came in while the loop ended run on the closed value, which fails them.
            for task in self.stopAccepting() { task(owned) }
        }
        thread.name = name
        thread.start()
    }

    /// Queues `task` and wakes the thread. False when the loop has stopped (the task will never run).
    @discardableResult
    func submit(_ task: @escaping Task) -> Bool {
        let mustWake = inbox.withLock { inbox -> Bool? in
            guard inbox.accepting else { return nil }
            inbox.tasks.append(task)
            defer { inbox.wakePending = true }
            return !inbox.wakePending
        }
        guard let mustWake else { return false }
        if mustWake {
            var byte: UInt8 = 1
            _ = write(wakeWrite, &byte, 1)
        }
        return true
    }

    /// On the loop's thread: the tasks submitted since the last call.
    func takeTasks() -> [Task] {
        inbox.withLock { inbox in
            inbox.wakePending = false
            defer { inbox.tasks.removeAll(keepingCapacity: true) }
            return inbox.tasks
        }
    }

    var hasTasks: Bool { inbox.withLock { !$0.tasks.isEmpty } }

    /// On the loop's thread: waits until a task is submitted, `socket` (if not -1) is readable,
    /// or `timeout` passes.
    func wait(socket: Int32, timeout: Duration) {
        var descriptors = [pollfd(fd: wakeRead, events: Int16(POLLIN), revents: 0)]
        if socket >= 0 { descriptors.append(pollfd(fd: socket, events: Int16(POLLIN), revents: 0)) }
        let (seconds, attoseconds) = max(timeout, .zero).components
        let milliseconds = Int32(clamping: seconds * 1000 + (attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        _ = poll(&descriptors, nfds_t(descriptors.count), milliseconds)
        if descriptors[0].revents != 0 {
            var buffer = [UInt8](repeating: 0, count: 64)
            while read(wakeRead, &buffer, buffer.count) > 0 {}
        }
    }

    /// Stops accepting tasks and returns those still queued.
    private func stopAccepting() -> [Task] {
        inbox.withLock { inbox -> [Task] in
            inbox.accepting = false
            defer { inbox.tasks.removeAll() }
            return inbox.tasks
        }
    }

    deinit {
        // Only now: a task submitted concurrently with the loop's end may still write to the pipe.
        close(wakeRead)
        close(wakeWrite)
    }
}
