import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import GRDB
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A worker process with its HTTP listener, for the hardening tests.
struct ObservedWorker {
    let process: WorkerProcess
    let log: String

    /// The listener binds a port the kernel picks (`HTTP_PORT=0`): a port chosen by the test and
    /// bound later by the worker could be taken in between by any of the run's connections, and a
    /// worker that cannot bind stops (after it began consuming).
    init(_ fixture: WorkerFixture, name: String, environment extra: [String: String] = [:], faultInjecting: Bool = false) throws {
        var environment = fixture.environment.merging(extra) { $1 }
        environment["HTTP_PORT"] = "0"
        environment["SWIFT_BACKTRACE"] = "enable=no"  // a crash on purpose should end at once
        log = fixture.directory.appendingPathComponent("\(name).log").path
        process = try WorkerProcess(environment: environment, logFile: log, faultInjecting: faultInjecting)
    }

    /// `path` on the worker's listener; nil while it does not listen (or no more).
    private func url(_ path: String) async -> URL? {
        guard let port = try? await process.listeningPort() else { return nil }
        return URL(string: "http://127.0.0.1:\(port)\(path)")
    }

    func status(_ path: String) async -> Int? {
        guard let url = await url(path), let (_, response) = try? await URLSession.shared.data(from: url) else { return nil }
        return (response as? HTTPURLResponse)?.statusCode
    }

    /// The body `path` answers; nil when nothing answers.
    func body(_ path: String) async -> String? {
        guard let url = await url(path), let (data, _) = try? await URLSession.shared.data(from: url) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// Polls `path` until it answers `status`; false after `timeout`.
    func poll(_ path: String, until status: Int, timeout: Duration) async throws -> Bool {
        try await waitFor(timeout: timeout, every: .milliseconds(50)) { await self.status(path) == status }
    }

    /// One sample of /metrics, by its full name with labels; nil when absent.
    func metric(_ sample: String) async -> Double? {
        guard let url = await url("/metrics"), let (data, _) = try? await URLSession.shared.data(from: url) else { return nil }
        let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
        return lines.first { $0.hasPrefix(sample + " ") }.flatMap { Double($0.split(separator: " ").last!) }
    }

    func stop() async throws -> Int32? {
        process.signal(SIGTERM)
        return try await process.waitForExit(timeout: .seconds(15))
    }
}

extension WorkerFixture {
    /// Everything `queue` holds now (acknowledged, so it is emptied), waiting up to `idle` for more.
    func drain(_ queue: String, idle: Duration = .milliseconds(500)) async throws -> [Delivery] {
        let session = try await TestBroker.session("drain.\(queue)")
        // The command queue stands for every queue the worker consumes (its shards too).
        for queue in queue == configuration.names.commandQueue ? configuration.commandQueues : [queue] {
            try await session.consume(queue: queue)
        }
        var all: [Delivery] = []
        while true {
            let batch = try await session.nextDeliveries(maximum: 256, wait: idle)
            guard let last = batch.last else { break }
            all += batch
            await session.ack(last.tag, multiple: true)
        }
        await session.close()
        return all
    }

    /// Publishes raw commands (with the properties a test needs) to the command exchange.
    func publishRaw(_ commands: [(body: String, messageID: String, replyTo: String?)], apiKey: String) async throws {
        let session = try await TestBroker.session("raw-publisher")
        try await session.enableConfirms()
        let messages = commands.map { command in
            OutgoingMessage(
                exchange: configuration.names.commandExchange, routingKey: configuration.names.commandRoutingKey, body: Array(command.body.utf8),
                properties: MessageProperties(contentType: "application/json", headers: ["x-api-key": .string(apiKey)], persistent: true,
                                              correlationID: command.messageID, replyTo: command.replyTo, messageID: command.messageID))
        }
        let outcomes = try await session.publish(messages)
        await session.close()
        guard outcomes.allSatisfy({ $0 == .confirmed }) else { throw FixtureError.noReply }
    }

    /// Collects direct replies until every id in `expected` is answered or `timeout` passes, then
    /// keeps listening for `settle` to catch duplicates.
    func collectReplies(for expected: Set<String>, timeout: Duration, settle: Duration = .seconds(1)) async throws -> [Delivery] {
        var replies: [Delivery] = []
        let deadline = ContinuousClock.now + timeout
        while !expected.isSubset(of: Set(replies.compactMap(\.properties.correlationID))), ContinuousClock.now < deadline {
            replies += try await client.replies(count: expected.count, timeout: .milliseconds(300))
        }
        replies += try await client.replies(count: 10_000, timeout: settle)
        Conformance.record(Array(replies.prefix(10)))
        return replies
    }
}

/// Holds SQLite's write lock on `path`, on a thread of its own (as another process would),
/// from when this returns until `release` is called (or the test ends: a failing test never
/// leaves the lock held).
func holdSQLiteWriteLock(on path: String) async throws -> @Sendable () -> Void {
    let locked = AsyncStream.makeStream(of: Void.self)
    let released = DispatchSemaphore(value: 0)
    let queue = try DatabaseQueue(path: path)
    let thread = Thread {
        try? queue.inDatabase { db in
            try db.execute(sql: "BEGIN IMMEDIATE")
            locked.continuation.yield()
            released.wait()
            try db.execute(sql: "COMMIT")
        }
    }
    thread.start()
    for await _ in locked.stream { break }
    let release = Mutex(Optional(released))
    let releaseOnce: @Sendable () -> Void = { release.withLock { $0?.signal(); $0 = nil } }
    TestResources.onExit("SQLite write lock on \(path)") { releaseOnce() }
    return releaseOnce
}
