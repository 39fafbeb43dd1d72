import Logging
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// The HTTP listener for orchestrators and Prometheus, built on SwiftNIO:
///
/// - `GET /healthz`: 200 `ok` when `health()` is true, else 503.
/// - `GET /readyz`: 200 `ready` when `readiness()` is true (the consumer is attached), else 503;
///   a second line carries `readinessDetail()` (e.g. the broker nodes in use) when it is not empty.
/// - `GET /metrics`: 200 with `metrics()`, content type `text/plain; version=0.0.4; charset=utf-8`.
/// - another method on these paths: 405 with `Allow: GET`; any other path: 404.
///
/// ``run()`` serves until its task is cancelled or ``stop()`` is called. With port 0 the system
/// picks a free port: ``waitUntilListening(timeout:)`` returns it.
///
/// One event loop thread, owned by ``run()``, accepts and parses; each connection is served by a
/// child task of ``run()`` through `NIOAsyncChannel`, so the async `health()` and `readiness()`
/// never block the event loop.
public final class HealthServer: Sendable {
    /// The content type of `/metrics`: Prometheus text exposition format 0.0.4.
    public static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"

    public let host: String
    public let port: UInt16
    private let address: SocketAddress
    private let router: Router
    private let logger: Logger
    private let state = Mutex(State())

    private struct State {
        var stopped = false
        /// The listening socket while ``run()`` serves: ``stop()`` closes it.
        var listener: (any Channel)?
        var boundPort: UInt16?
    }

    /// - Parameters:
    ///   - port: The TCP port; 0 picks a free one.
    ///   - host: An IPv4 or IPv6 address to bind (`0.0.0.0` every IPv4 interface, `::` every
    ///     interface, `127.0.0.1` / `localhost` loopback only).
    ///   - requestTimeout: How long `health()` or `readiness()` may take before the request is
    ///     answered 500.
    /// - Throws: ``HealthServerError/invalidHost(_:)`` when `host` is not an IP address.
    public init(
        port: UInt16,
        host: String = "0.0.0.0",
        requestTimeout: Duration = .seconds(5),
        logger: Logger = Logger(label: "customer-worker.http"),
        readiness: @escaping @Sendable () async -> Bool,
        readinessDetail: @escaping @Sendable () -> String = { "" },
        health: @escaping @Sendable () async -> Bool = { true },
        metrics: @escaping @Sendable () -> String
    ) throws {
        self.host = host
        self.port = port
        do {
            // Parses a numeric address only: no name resolution.
            address = try SocketAddress(ipAddress: host == "localhost" ? "127.0.0.1" : host, port: Int(port))
        } catch {
            throw HealthServerError.invalidHost(host)
        }
        self.logger = logger
        router = Router(readiness: readiness, readinessDetail: readinessDetail, health: health, metrics: metrics,
                        timeout: requestTimeout)
    }

    /// Binds, listens and serves until the calling task is cancelled or ``stop()`` is called, then
    /// returns normally. Throws when the address cannot be bound (port in use, for instance).
    public func run() async throws {
        if state.withLock({ $0.stopped }) { return }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        var failure: (any Error)?
        do {
            try await serve(on: group)
        } catch {
            failure = error
        }
        state.withLock {
            $0.listener = nil
            $0.boundPort = nil
        }
        try? await group.shutdownGracefully()
        if let failure, !Task.isCancelled, !state.withLock({ $0.stopped }) {
            throw failure
        }
    }

    /// Closes the listener and the open connections; ``run()`` then returns.
    public func stop() async {
        let listener = state.withLock {
            $0.stopped = true
            return $0.listener
        }
        try? await listener?.close()
    }

    /// Waits until ``run()`` listens and returns the bound port (the chosen one when `port` is 0).
    @discardableResult
    public func waitUntilListening(timeout: Duration = .seconds(5)) async throws -> UInt16 {
        let clock = ContinuousClock()
        let deadline = clock.now.advanced(by: timeout)
        while true {
            if let port = await listeningPort { return port }
            guard clock.now < deadline else { throw HealthServerError.notListening }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The bound port while listening, else nil.
    public var listeningPort: UInt16? {
        get async { state.withLock { $0.boundPort } }
    }

    /// Binds, then accepts until the listener closes or the task is cancelled; the open
    /// connections are then cancelled, which closes them.
    private func serve(on group: MultiThreadedEventLoopGroup) async throws {
        let listener = try await ServerBootstrap(group: group)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .bind(to: address) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline()
                    return try NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>(
                        wrappingChannelSynchronously: channel)
                }
            }
        let boundPort = listener.channel.localAddress?.port.map { UInt16($0) }
        let serving = state.withLock {
            guard !$0.stopped else { return false }
            $0.listener = listener.channel
            $0.boundPort = boundPort
            return true
        }
        logger.debug("HTTP listener on \(host):\(boundPort.map(String.init) ?? "?")")
        try await withThrowingDiscardingTaskGroup { connections in
            try await listener.executeThenClose { inbound in
                guard serving else { return }
                for try await connection in inbound {
                    connections.addTask { await self.serve(connection) }
                }
            }
            connections.cancelAll()
        }
    }

    /// Answers the requests of one connection in order until the client closes it, asks to close
    /// it, or the task is cancelled.
    private func serve(_ connection: NIOAsyncChannel<HTTPServerRequestPart, HTTPServerResponsePart>) async {
        do {
            try await connection.executeThenClose { inbound, outbound in
                var head: HTTPRequestHead?
                for try await part in inbound {
                    switch part {
                    case .head(let request):
                        head = request
                    case .body:
                        continue
                    case .end:
                        guard let request = head else { continue }
                        head = nil
                        let reply = await router.reply(to: request)
                        try await outbound.write(contentsOf: reply.parts(for: request))
                        if !request.isKeepAlive { return }
                    }
                }
            }
        } catch {
            logger.trace("HTTP connection closed: \(error)")
        }
    }
}

public enum HealthServerError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidHost(String)
    case notListening

    public var description: String {
        switch self {
        case .invalidHost(let host): "invalid HTTP listener host '\(host)': expected an IPv4 or IPv6 address"
        case .notListening: "the HTTP listener is not listening"
        }
    }
}

/// One response: status, content type, body and, for 405, `Allow: GET`.
private struct Reply {
    var status: HTTPResponseStatus
    var contentType = "text/plain; charset=utf-8"
    var body: String
    var allowGet = false

    /// Head, body and end. A HEAD request gets the head only; `Connection` follows the request.
    func parts(for request: HTTPRequestHead) -> [HTTPServerResponsePart] {
        let body = ByteBuffer(string: body)
        var headers = HTTPHeaders()
        headers.add(name: "Content-Type", value: contentType)
        headers.add(name: "Content-Length", value: String(body.readableBytes))
        headers.add(name: "Cache-Control", value: "no-store")
        headers.add(name: "Connection", value: request.isKeepAlive ? "keep-alive" : "close")
        if allowGet { headers.add(name: "Allow", value: "GET") }
        let head = HTTPServerResponsePart.head(HTTPResponseHead(version: request.version, status: status, headers: headers))
        return request.method == .HEAD ? [head, .end(nil)] : [head, .body(.byteBuffer(body)), .end(nil)]
    }
}

/// Routes the three paths.
private struct Router: Sendable {
    let readiness: @Sendable () async -> Bool
    let readinessDetail: @Sendable () -> String
    let health: @Sendable () async -> Bool
    let metrics: @Sendable () -> String
    let timeout: Duration

    func reply(to request: HTTPRequestHead) async -> Reply {
        let path = request.uri.prefix { $0 != "?" }
        guard ["/healthz", "/readyz", "/metrics"].contains(path) else {
            return Reply(status: .notFound, body: "not found")
        }
        guard request.method == .GET else {
            return Reply(status: .methodNotAllowed, body: "method not allowed", allowGet: true)
        }
        switch path {
        case "/healthz":
            return check(await answer(health), ok: "ok", failed: "unhealthy")
        case "/readyz":
            let detail = readinessDetail()
            let suffix = detail.isEmpty ? "" : "\n" + detail
            return check(await answer(readiness), ok: "ready" + suffix, failed: "not ready" + suffix)
        default:
            return Reply(status: .ok, contentType: HealthServer.metricsContentType, body: metrics())
        }
    }

    private func check(_ answer: Bool?, ok: String, failed: String) -> Reply {
        switch answer {
        case true?: Reply(status: .ok, body: ok)
        case false?: Reply(status: .serviceUnavailable, body: failed)
        case nil: Reply(status: .internalServerError, body: "timed out")
        }
    }

    /// `check()` run in a task of its own, or nil when it has not answered within `timeout`; a late
    /// answer is dropped.
    private func answer(_ check: @escaping @Sendable () async -> Bool) async -> Bool? {
        let timeout = timeout
        return await withCheckedContinuation { continuation in
            let once = Once(continuation)
            let timer = Task {
                do { try await Task.sleep(for: timeout) } catch { return }
                once.resume(returning: nil)
            }
            Task {
                let answer = await check()
                if once.resume(returning: answer) { timer.cancel() }
            }
        }
    }
}

/// A continuation that the first of several tasks resumes.
private final class Once<Value: Sendable>: Sendable {
    private let continuation: Mutex<CheckedContinuation<Value, Never>?>

    init(_ continuation: CheckedContinuation<Value, Never>) {
        self.continuation = Mutex(continuation)
    }

    /// Resumes the continuation unless another call did; returns whether this one did.
    @discardableResult
    func resume(returning value: Value) -> Bool {
        guard let continuation = continuation.withLock({ $0.take() }) else { return false }
        continuation.resume(returning: value)
        return true
    }
}
