import Hummingbird
import Logging
import NIOCore
import NIOPosix
import ServiceLifecycle
import Synchronization

/// The HTTP listener for orchestrators and Prometheus, on Hummingbird, as a Service (it runs in
/// the worker's ServiceGroup and stops with its graceful shutdown or when its task is cancelled):
///
/// - `GET /healthz`: 200 `ok` when `health()` is true, else 503.
/// - `GET /readyz`: 200 `ready` when `readiness()` is true (the consumer is attached), else 503;
///   a second line carries `readinessDetail()` (e.g. the broker nodes in use) when it is not empty.
/// - `GET /metrics`: 200 with `metrics()`, content type `text/plain; version=0.0.4; charset=utf-8`.
/// - another method on these paths: 405 with `Allow: GET`; any other path: 404.
///
/// The checks are reads of the worker's state (atomics and locks): they answer at once, so a
/// request needs no timeout of its own. With port 0 the system picks a free port:
/// ``waitUntilListening(timeout:)`` returns it.
public struct HTTPListener: Service {
    /// The content type of `/metrics`: Prometheus text exposition format 0.0.4.
    public static let metricsContentType = "text/plain; version=0.0.4; charset=utf-8"
    static let paths: Set<String> = ["/healthz", "/readyz", "/metrics"]

    public let host: String
    public let port: UInt16
    private let checks: Checks
    private let logger: Logger
    private let bound = BoundPort()

    struct Checks: Sendable {
        let readiness: @Sendable () -> Bool
        let readinessDetail: @Sendable () -> String
        let health: @Sendable () -> Bool
        let metrics: @Sendable () -> String
    }

    /// - Parameters:
    ///   - port: The TCP port; 0 picks a free one.
    ///   - host: An IPv4 or IPv6 address to bind (`0.0.0.0` every IPv4 interface, `::` every
    ///     interface, `127.0.0.1` / `localhost` loopback only).
    /// - Throws: ``HTTPListenerError/invalidHost(_:)`` when `host` is not an IP address.
    public init(
        port: UInt16,
        host: String = "0.0.0.0",
        logger: Logger = Logger(label: "customer-worker.http"),
        readiness: @escaping @Sendable () -> Bool,
        readinessDetail: @escaping @Sendable () -> String = { "" },
        health: @escaping @Sendable () -> Bool = { true },
        metrics: @escaping @Sendable () -> String
    ) throws {
        // A numeric address only: no name resolution at bind time.
        let numeric = host == "localhost" ? "127.0.0.1" : host
        guard (try? SocketAddress(ipAddress: numeric, port: Int(port))) != nil else { throw HTTPListenerError.invalidHost(host) }
        self.host = numeric
        self.port = port
        self.logger = logger
        checks = Checks(readiness: readiness, readinessDetail: readinessDetail, health: health, metrics: metrics)
    }

    /// Binds, listens and serves until graceful shutdown or cancellation, then returns normally.
    /// Throws when the address cannot be bound (port in use, for instance).
    public func run() async throws {
        let router = Router(options: .autoGenerateHeadEndpoints)
        router.add(middleware: OnlyGet())
        let checks = checks
        router.get("/healthz") { _, _ in Self.check(checks.health(), ok: "ok", failed: "unhealthy") }
        router.get("/readyz") { _, _ in
            let detail = checks.readinessDetail()
            let suffix = detail.isEmpty ? "" : "\n" + detail
            return Self.check(checks.readiness(), ok: "ready" + suffix, failed: "not ready" + suffix)
        }
        router.get("/metrics") { _, _ in Self.text(.ok, checks.metrics(), contentType: Self.metricsContentType) }
        let bound = bound
        // An event loop of its own, as the probes must answer while the process is busy: NIO's
        // shared loops also carry the PostgreSQL pool (and, in tests, every other client).
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let application = Application(
            router: router,
            configuration: ApplicationConfiguration(address: .hostname(host, port: Int(port)), reuseAddress: true),
            onServerRunning: { channel in bound.set(channel.localAddress?.port.map { UInt16($0) }) },
            eventLoopGroupProvider: .shared(group),
            logger: logger)
        let outcome: Result<Void, any Error>
        do { outcome = .success(try await application.run()) } catch { outcome = .failure(error) }
        bound.set(nil)
        try? await group.shutdownGracefully()
        try outcome.get()
    }

    /// Waits until ``run()`` listens and returns the bound port (the chosen one when `port` is 0).
    @discardableResult
    public func waitUntilListening(timeout: Duration = .seconds(5)) async throws -> UInt16 {
        let deadline = ContinuousClock.now + timeout
        while true {
            if let port = listeningPort { return port }
            guard ContinuousClock.now < deadline else { throw HTTPListenerError.notListening }
            try await Task.sleep(for: .milliseconds(5))
        }
    }

    /// The bound port while listening, else nil.
    public var listeningPort: UInt16? { bound.get() }

    static func text(_ status: HTTPResponse.Status, _ body: String, contentType: String = "text/plain; charset=utf-8") -> Response {
        var headers = HTTPFields()
        headers[.contentType] = contentType
        headers[.cacheControl] = "no-store"
        return Response(status: status, headers: headers, body: ResponseBody(byteBuffer: ByteBuffer(string: body)))
    }

    private static func check(_ passed: Bool, ok: String, failed: String) -> Response {
        passed ? text(.ok, ok) : text(.serviceUnavailable, failed)
    }
}

/// 405 with `Allow: GET` for another method on one of the listener's paths (HEAD is GET's).
private struct OnlyGet: RouterMiddleware {
    typealias Context = BasicRequestContext

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws -> Response {
        guard HTTPListener.paths.contains(request.uri.path), request.method != .get, request.method != .head else {
            return try await next(request, context)
        }
        var response = HTTPListener.text(.methodNotAllowed, "method not allowed")
        response.headers[.allow] = "GET"
        return response
    }
}

/// The port the server bound, set by Hummingbird's onServerRunning.
private final class BoundPort: Sendable {
    private let port = Mutex<UInt16?>(nil)
    func set(_ value: UInt16?) { port.withLock { $0 = value } }
    func get() -> UInt16? { port.withLock { $0 } }
}

public enum HTTPListenerError: Error, Sendable, Equatable, CustomStringConvertible {
    case invalidHost(String)
    case notListening

    public var description: String {
        switch self {
        case .invalidHost(let host): "invalid HTTP listener host '\(host)': expected an IPv4 or IPv6 address"
        case .notListening: "the HTTP listener is not listening"
        }
    }
}
