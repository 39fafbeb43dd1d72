import DatabaseURL
import CreateCustomer
import CustomerDomain
import Foundation
import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The customer database on PostgreSQL: the store for replicas on several hosts. An adapter only:
/// the rules live in `CreateCustomer`.
///
/// The store is a Service running its client (a connection pool), which must run while the
/// store is used: in the worker's ServiceGroup, or through `withRunningClient` for one-off
/// commands. Transactions run at READ COMMITTED; the unique constraints are the final guard
/// between replicas, and rows are inserted sorted by idempotency key, so batches wait for each
/// other instead of deadlocking.
///
/// An outage of any length: once a transaction finds the server unreachable (no connection, a
/// connection lost, the pool's circuit breaker open), each later one first connects once outside
/// the pool. While that fails it fails at once, as the database being away; when it succeeds the
/// server is back, and the store replaces its client with a fresh pool, whose first connection
/// comes at once: postgres-nio's pool backs off up to a minute between attempts after a long
/// outage, and stops trying (`connectionCreationCircuitBreakerTripped`) after one.
public final class PostgresStore: CustomerStorage, Service {
    public let url: PostgresURL
    private let clients: ClientSupervisor
    private let logger: Logger

    /// The client transactions use now (a new one after an outage).
    public var client: PostgresClient { clients.current.client }

    public var location: String { url.redacted }

    public init(url: PostgresURL, logger: Logger) throws(PostgresStoreError) {
        self.url = url
        self.logger = logger
        // The pool logs every failed connection attempt at info, several a second while the server
        // is away; the store's own errors say why once per operation (with the reason), at the
        // caller's level. Its warnings and worse still come through.
        var poolLogger = logger
        poolLogger.logLevel = max(logger.logLevel, .notice)
        let configuration = url.clientConfiguration
        clients = ClientSupervisor { [poolLogger] in PostgresClient(configuration: configuration, backgroundLogger: poolLogger) }
    }

    /// Runs the current client, and each one that replaces it (the one replaced is shut down),
    /// until graceful shutdown or cancellation.
    public func run() async {
        await clients.run()
    }

    public convenience init(url text: String, logger: Logger) throws(PostgresStoreError) {
        let url: PostgresURL
        do { url = try PostgresURL(text) } catch { throw .invalidURL(error.url, error.rule) }
        try self.init(url: url, logger: logger)
    }

    /// Runs the client while `body` runs (for commands that are not services).
    public func withRunningClient<T: Sendable>(_ body: (PostgresStore) async throws -> T) async throws -> T {
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { await self.run() }
            defer { group.cancelAll() }
            return try await body(self)
        }
    }

    /// Runs `body` in a transaction on a connection of the pool. Waiting for a connection is
    /// bounded by `connect_timeout` (the pool itself would wait for as long as the server is away),
    /// and the transaction by `answer_timeout`: then its connection is closed and the call fails
    /// as the database being away, whatever the statement in flight does.
    ///
    /// The transaction runs in a task of its own, not a child task, on purpose: a statement
    /// postgres-nio never answers must not hold the caller (and with it the worker's batch and its
    /// shutdown). That was seen after a backend was terminated while its statement waited for a
    /// lock: the statement was never failed, not even once its connection was closed. Such a task
    /// is abandoned with its pool slot; it ends if postgres-nio ever answers.
    ///
    /// `explicit: false` runs `body`'s statements without BEGIN and COMMIT, each its own
    /// transaction: for work whose only write is one statement (atomic by itself), whose reads
    /// need no more than READ COMMITTED gives each statement anyway, and which takes no lock it
    /// must hold past one statement. It saves two round trips.
    public func transaction<T: Sendable>(_ operation: String, explicit: Bool = true,
                                         _ body: @escaping @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        let running = try await clientAfterOutage(operation)
        do {
            return try await transaction(operation, explicit: explicit, on: running, body)
        } catch {
            if Self.meansUnreachable(error) { clients.noteUnreachable(running) }
            throw error
        }
    }

    /// The client to use: the current one, unless the server was found unreachable since it
    /// started; then a connection outside the pool tells whether the server is back (a fresh
    /// client is started) or not (this throws at once, as the database being away).
    private func clientAfterOutage(_ operation: String) async throws -> ClientSupervisor.Running {
        let current = clients.current
        guard current.unreachable else { return current }
        if let reason = await Self.whyNoConnection(url, logger: logger) {
            throw PostgresStoreError.connection(operation: operation, location: location, reason: "the server is unreachable\(reason)")
        }
        let fresh = clients.replace(current)
        if fresh !== current { logger.notice("the database answers again; its connection pool is started afresh", metadata: ["database": "\(location)"]) }
        return fresh
    }

    /// Whether `error` (as `transaction` throws it) says the server could not be reached or the
    /// session with it ended: the next transaction checks first whether it is back.
    static func meansUnreachable(_ error: any Error) -> Bool {
        switch error as? PostgresStoreError {
        case .connection: return true
        case .server(_, _, let sqlState, _): return sqlState.hasPrefix("08") || sqlState.hasPrefix("57P")
        default: return false
        }
    }

    private func transaction<T: Sendable>(_ operation: String, explicit: Bool, on running: ClientSupervisor.Running,
                                          _ body: @escaping @Sendable (PostgresTransaction) async throws -> T) async throws -> T {
        let (logger, timeout, location, url) = (self.logger, url.connectTimeout, self.location, self.url)
        let answerTimeout = url.answerTimeout
        let client = running.client
        let lease = Lease()
        let first = FirstResult<T>()
        let work = Task {
            defer { lease.finish() }  // after COMMIT, which could hang too
            do {
                first.resume(.success(try await client.withConnection { connection in
                    lease.start(connection, backend: try await running.backend(of: connection, logger: logger))
                    return try await Self.inTransaction(connection, explicit: explicit, logger: logger, body)
                }))
            } catch {
                first.resume(.failure(error))
            }
        }
        let watchdog = Task {
            try await Task.sleep(for: timeout)
            guard let started = lease.startedAt else {
                let reason = await Self.whyNoConnection(url, logger: logger) ?? ""
                first.resume(.failure(PostgresStoreError.connection(
                    operation: operation, location: location, reason: "no connection to the server within \(timeout)\(reason)")))
                work.cancel()
                return
            }
            try await Task.sleep(until: started + answerTimeout)
            guard let abandoned = lease.abandon() else { return }
            let (connection, backend) = abandoned
            // The caller hears of the timeout first: ending the backend fails its statement too.
            first.resume(.failure(PostgresStoreError.connection(
                operation: operation, location: location,
                reason: "no answer from the server within \(answerTimeout) (answer_timeout); it was ended on the server and its connection closed")))
            work.cancel()
            // Ended on the server (its statement cancelled, its locks released), whatever the
            // connection's state: a closed socket alone leaves the backend working until it next
            // writes to the client, holding its locks. A task of its own: the caller, answered,
            // cancels this watchdog.
            Task {
                let ended = await Self.endOnServer(backend, url: url, logger: logger)
                logger.error("the database did not answer a transaction in time; it was ended on the server and its connection closed", metadata: [
                    "operation": "\(operation)", "answer_timeout": "\(answerTimeout)", "db.backend_pid": "\(backend.pid)",
                    "db.backend_ended": "\(ended)",
                ])
                try? await connection.close()
            }
        }
        defer { watchdog.cancel() }
        do {
            return try await withTaskCancellationHandler {
                try await withCheckedThrowingContinuation { first.wait($0) }
            } onCancel: {
                work.cancel()
                first.resume(.failure(CancellationError()))
            }
        } catch {
            throw PostgresStoreError.wrapping(error, operation: operation, location: location)
        }
    }

    /// BEGIN, `body`, COMMIT on `connection`; ROLLBACK when `body` throws. A connection whose
    /// server ended the session (a FATAL error, such as a terminated backend's) is closed instead:
    /// a ROLLBACK there could only wait for an answer that never comes, and the pool must not hand
    /// the connection out again. Not `explicit`: `body` alone, each statement its own transaction.
    static func inTransaction<T>(_ connection: PostgresConnection, explicit: Bool, logger: Logger,
                                 _ body: (PostgresTransaction) async throws -> T) async throws -> T {
        if explicit { try await connection.query("BEGIN", logger: logger) }
        let value: T
        do {
            value = try await body(PostgresTransaction(connection: connection, logger: logger))
        } catch {
            if Self.endsTheConnection(error) {
                try? await connection.close()
            } else if explicit {
                do {
                    try await connection.query("ROLLBACK", logger: logger)
                } catch {
                    try? await connection.close()
                }
            }
            throw error
        }
        if explicit { try await connection.query("COMMIT", logger: logger) }
        return value
    }

    /// Whether the server ended the session (severity FATAL or PANIC) or the connection is gone.
    static func endsTheConnection(_ error: any Error) -> Bool {
        guard let error = error as? PSQLError else { return false }
        switch error.code {
        case .server:
            let severity = error.serverInfo?[.severity] ?? ""
            return severity == "FATAL" || severity == "PANIC"
        case .serverClosedConnection, .clientClosedConnection, .connectionError, .uncleanShutdown:
            return true
        default:
            return false
        }
    }

    /// Cancels the backend's statement and ends its session on the server (rolling back its
    /// transaction, releasing its locks), through a connection of its own: `pg_terminate_backend`
    /// of that process, only if it is still the session that started at `backend.started` (a
    /// process id can be reused). False when it could not be done (the server unreachable).
    static func endOnServer(_ backend: Backend, url: PostgresURL, logger: Logger) async -> Bool {
        let connection: PostgresConnection
        do {
            connection = try await PostgresConnection.connect(configuration: try url.connectionConfiguration, id: 0, logger: logger)
        } catch {
            return false
        }
        var ended = false
        do {
            let rows = try await connection.query("""
                SELECT pg_cancel_backend(pid), pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE pid = \(backend.pid) AND backend_start::text = \(backend.started)
                """, logger: logger)
            for try await (_, terminated) in rows.decode((Bool, Bool).self) { ended = terminated }
        } catch {
            ended = false
        }
        try? await connection.close()
        return ended
    }

    /// Connects once outside the pool (which keeps its reasons to its log) to tell the user why
    /// no connection came: refused, TLS, authentication, unknown database. Nil when it connected.
    private static func whyNoConnection(_ url: PostgresURL, logger: Logger) async -> String? {
        do {
            let connection = try await PostgresConnection.connect(configuration: try url.connectionConfiguration, id: 0, logger: logger)
            try? await connection.close()
            return nil
        } catch let error as PSQLError {
            return ": " + PostgresStoreError.reason(error)
        } catch {
            return ""
        }
    }

    /// Round trips per batch: one per read step (keys, records, plans), one for the writes (and,
    /// after a lost race, one or two more reads). The core writes once, in one statement (the
    /// customers, their subscriptions and records: atomic by itself); its reads take no locks and
    /// see, at READ COMMITTED, what each statement would see inside BEGIN…COMMIT too; so the batch
    /// runs without BEGIN and COMMIT, two round trips fewer. A batch that finishes markers has two
    /// writes, the markers' first (they are its rows from then on, `HandlingAttempt`): it runs
    /// inside one explicit transaction.
    public func createCustomers(_ core: CreateCustomerCore, finishingAttempts: [String]) async throws -> [CommandOutcome] {
        try await transaction("handle commands", explicit: !finishingAttempts.isEmpty) { transaction in
            // First: the markers' rows are this transaction's from now on (see `HandlingAttempt`).
            if !finishingAttempts.isEmpty { try await transaction.deleteAttempts(keys: finishingAttempts) }
            var core = core
            return try await core.run(read: { try await transaction.read($0) }, write: { try await transaction.write($0) })
        }
    }

    /// An admin operation in one transaction: its reads (a round trip per kind of row), its
    /// decision, its writes (a round trip each).
    public func administer<Operation: AdminOperation>(_ operation: Operation) async throws -> Operation.Answer {
        try await transaction(operation.operation) { transaction in
            let decision = try operation.decide(try await transaction.read(operation.reads))
            for change in decision.writes { try await transaction.apply(change) }
            return decision.answer
        }
    }

    public func beginAttempt(key: String, now: Timestamp, since: Timestamp) async throws -> Int {
        try await transaction("record a handling attempt") { try await $0.beginAttempt(key: key, now: now, since: since) }
    }

    public func clearAttempt(key: String) async throws {
        try await transaction("clear a handling attempt") { try await $0.deleteAttempts(keys: [key]) }
    }

    public func classify(_ error: any Error) -> StoreFailure {
        Self.classify(error)
    }

    public static func classify(_ error: any Error) -> StoreFailure {
        if let fault = StoreFailure.commandFault(error) { return fault }
        if let error = error as? PostgresStoreError { return error.failure }
        // postgres-nio's own errors, as a caller outside `transaction` may meet them.
        if let error = PostgresStoreError.wrapping(error, operation: "", location: "") as? PostgresStoreError { return error.failure }
        return StoreFailure(.unknown, code: String(describing: type(of: error)))
    }

    /// Applies the migrations not applied yet, in order, each recorded in `schema_migrations`.
    /// Replicas starting at once take turns on an advisory lock, held until the transaction ends.
    public func migrate() async throws { try await migrate(through: .max) }

    /// `migrate()` up to `lastVersion`: tests build an earlier schema with it.
    func migrate(through lastVersion: Int) async throws {
        let logger = logger
        _ = try await transaction("migrate") { transaction in
            let connection = transaction.connection
            try await connection.query("SELECT pg_advisory_xact_lock(\(PostgresMigrations.lockKey))", logger: logger)
            try await connection.query("""
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version integer PRIMARY KEY, description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())
                """, logger: logger)
            var applied = Set<Int>()
            for try await version in try await connection.query("SELECT version FROM schema_migrations", logger: logger).decode(Int.self) {
                applied.insert(version)
            }
            for migration in PostgresMigrations.all where !applied.contains(migration.version) && migration.version <= lastVersion {
                for statement in migration.statements {
                    try await connection.query(PostgresQuery(unsafeSQL: statement), logger: logger)
                }
                try await connection.query(
                    "INSERT INTO schema_migrations (version, description) VALUES (\(migration.version), \(migration.description))",
                    logger: logger)
            }
            return applied.count
        }
    }

    /// The schema versions applied, in order.
    public func appliedMigrations() async throws -> [Int] {
        let logger = logger
        return try await transaction("read migrations") { transaction in
            var versions: [Int] = []
            let rows = try await transaction.connection.query("SELECT version FROM schema_migrations ORDER BY version", logger: logger)
            for try await version in rows.decode(Int.self) { versions.append(version) }
            return versions
        }
    }

    public func customerCount() async throws -> Int {
        try await transaction("count customers") { transaction in
            try await transaction.single("SELECT count(*) FROM customers")
        }
    }

    public func checkWritable() async throws {
        let (now, logger) = (Timestamp(Date()).millisecondsSince1970, logger)
        try await transaction("health check") { transaction in
            _ = try await transaction.connection.query(
                "INSERT INTO health_checks (id, checked_at) VALUES (1, \(now)) ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                logger: logger)
        }
    }
}

/// Set once, read from another task.
/// The first of the results raced for one call (the transaction's, the watchdog's, cancellation's),
/// handed to the caller's continuation once; later ones are dropped.
private final class FirstResult<T: Sendable>: Sendable {
    private enum State {
        case pending
        case waiting(CheckedContinuation<T, any Error>)
        case arrived(Result<T, any Error>)
        case delivered
    }
    private let state = Mutex(State.pending)

    func wait(_ continuation: CheckedContinuation<T, any Error>) {
        let ready: Result<T, any Error>? = state.withLock { state in
            switch state {
            case .pending:
                state = .waiting(continuation)
                return nil
            case .arrived(let result):
                state = .delivered
                return result
            case .waiting, .delivered:
                preconditionFailure("one caller waits for one result")
            }
        }
        if let ready { continuation.resume(with: ready) }
    }

    func resume(_ result: Result<T, any Error>) {
        let waiting: CheckedContinuation<T, any Error>? = state.withLock { state in
            switch state {
            case .pending:
                state = .arrived(result)
                return nil
            case .waiting(let continuation):
                state = .delivered
                return continuation
            case .arrived, .delivered:
                return nil
            }
        }
        waiting?.resume(with: result)
    }
}

/// A transaction's connection, from the lease until the transaction has ended.
private final class Lease: Sendable {
    private enum State {
        case waiting
        case running(PostgresConnection, Backend, since: ContinuousClock.Instant)
        case finished(since: ContinuousClock.Instant)
    }
    private let state = Mutex(State.waiting)

    func start(_ connection: PostgresConnection, backend: Backend) { state.withLock { $0 = .running(connection, backend, since: .now) } }
    func finish() { state.withLock { if case .running(_, _, let since) = $0 { $0 = .finished(since: since) } } }

    var startedAt: ContinuousClock.Instant? {
        state.withLock { state in
            switch state {
            case .waiting: nil
            case .running(_, _, let since), .finished(let since): since
            }
        }
    }

    /// The connection and backend of a transaction still running (which stops counting as
    /// running); nil once it ended.
    func abandon() -> (PostgresConnection, Backend)? {
        state.withLock { state in
            guard case .running(let connection, let backend, let since) = state else { return nil }
            state = .finished(since: since)
            return (connection, backend)
        }
    }
}

/// A connection's server process, as `pg_stat_activity` names it: enough to end its work on the
/// server from another connection.
struct Backend: Sendable, Hashable {
    var pid: Int32
    /// `backend_start` as text: the same process id later is another session.
    var started: String
}

/// The store's clients: the one in use, and the service that runs each of them. A client is
/// replaced (`replace`) once the server was unreachable and answers again: the new one is run, the
/// old one shut down (its pool closes its connections; a transaction still on one of them fails).
final class ClientSupervisor: Sendable {
    /// A client, run by the supervisor until it is retired.
    final class Running: Sendable {
        let client: PostgresClient
        private let retirement = AsyncStream.makeStream(of: Void.self)
        private let unreachableSince = Mutex<ContinuousClock.Instant?>(nil)

        /// The server process of each connection of this client's pool, asked once per connection
        /// (pool connection ids are unique within one pool, and die with it).
        private let backends = Mutex<[PostgresConnection.ID: Backend]>([:])

        init(_ client: PostgresClient) { self.client = client }

        /// The server process of `connection`: one round trip the first time it is leased.
        func backend(of connection: PostgresConnection, logger: Logger) async throws -> Backend {
            if let known = backends.withLock({ $0[connection.id] }) { return known }
            let rows = try await connection.query(
                "SELECT pid, backend_start::text FROM pg_stat_activity WHERE pid = pg_backend_pid()", logger: logger)
            var backend = Backend(pid: 0, started: "")
            for try await (pid, started) in rows.decode((Int32, String).self) { backend = Backend(pid: pid, started: started) }
            backends.withLock { $0[connection.id] = backend }
            return backend
        }

        /// Whether a transaction on this client found the server unreachable.
        var unreachable: Bool { unreachableSince.withLock { $0 != nil } }
        func noteUnreachable() { unreachableSince.withLock { $0 = $0 ?? .now } }

        /// Runs the client until it is retired (or the task is cancelled).
        func run() async {
            await withTaskGroup(of: Void.self) { group in
                group.addTask { await self.client.run() }
                group.addTask { for await _ in self.retirement.stream {} }
                await group.next()
                group.cancelAll()
            }
        }

        func retire() { retirement.continuation.finish() }
    }

    private let make: @Sendable () -> PostgresClient
    private let state: Mutex<Running>
    private let started = AsyncStream.makeStream(of: Running.self)

    init(_ make: @escaping @Sendable () -> PostgresClient) {
        self.make = make
        let first = Running(make())
        state = Mutex(first)
        started.continuation.yield(first)
    }

    var current: Running { state.withLock { $0 } }

    func noteUnreachable(_ running: Running) { running.noteUnreachable() }

    /// Replaces `stale` with a fresh client, unless another caller did already; returns the one to use.
    func replace(_ stale: Running) -> Running {
        let (fresh, replaced) = state.withLock { current -> (Running, Bool) in
            guard current === stale else { return (current, false) }
            current = Running(make())
            return (current, true)
        }
        if replaced {
            started.continuation.yield(fresh)
            stale.retire()
        }
        return fresh
    }

    /// Runs every client started, each until it is retired, until graceful shutdown or cancellation.
    func run() async {
        await cancelWhenGracefulShutdown {
            await withDiscardingTaskGroup { group in
                for await running in self.started.stream {
                    group.addTask { await running.run() }
                }
            }
        }
    }
}
