import Synchronization
import Testing

/// What a test opened (broker sessions, worker processes, databases, fixtures) and must close on
/// every path: when the test returns, throws or fails an expectation, everything registered here
/// is closed, last opened first. A helper that opens something registers its close with
/// `TestResources.onExit`; a suite opts in with the `.closesResources` trait.
///
/// Closing after the test (instead of a `defer { Task { … } }` or a close at the end of the happy
/// path) means a failing test cannot leave a PostgreSQL connection to be deinitialised unclosed
/// (postgres-nio asserts, and the whole test process dies) or a worker process consuming the next
/// test's commands.
public final class TestResources: Sendable {
    @TaskLocal public static var current: TestResources?

    private let closes = Mutex<[(label: String, close: @Sendable () async -> Void)]>([])

    /// Registers `close` to run when the current test ends. Outside a test that has the
    /// `.closesResources` trait the resource would leak, so that is a test failure.
    public static func onExit(_ label: String, _ close: @escaping @Sendable () async -> Void) {
        guard let current else {
            Issue.record("\(label) opened outside a test with the .closesResources trait: it would not be closed if the test failed")
            return
        }
        current.closes.withLock { $0.append((label, close)) }
    }

    fileprivate init() {}

    fileprivate func closeAll() async {
        while let next = closes.withLock({ $0.popLast() }) {
            await next.close()
        }
    }
}

/// Runs each test of a suite in a `TestResources` scope and closes what it registered afterwards.
public struct ClosesResources: SuiteTrait, TestTrait, TestScoping {
    public var isRecursive: Bool { true }

    public func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void) async throws {
        guard testCase != nil else { return try await function() }
        let resources = TestResources()
        do {
            try await TestResources.$current.withValue(resources) { try await function() }
        } catch {
            await resources.closeAll()
            throw error
        }
        await resources.closeAll()
    }
}

extension Trait where Self == ClosesResources {
    /// Closes every connection, process and server a test registered, on every path.
    public static var closesResources: Self { ClosesResources() }
}

/// Polls `condition` every `interval` until it holds; false after `timeout`. A condition that
/// starts a process (psql) or asks a server over HTTP takes a longer interval.
public func waitFor(timeout: Duration, every interval: Duration = .milliseconds(20),
                    _ condition: () async throws -> Bool) async throws -> Bool {
    let deadline = ContinuousClock.now + timeout
    while ContinuousClock.now < deadline {
        if try await condition() { return true }
        try await Task.sleep(for: interval)
    }
    return try await condition()
}
