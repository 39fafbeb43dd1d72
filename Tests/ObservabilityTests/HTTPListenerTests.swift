import CoreMetrics
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Logging
import Observability
import ServiceLifecycle
import Synchronization
import Testing

/// Readiness and health answers the tests switch while the server runs.
final class Switches: Sendable {
    let ready = Mutex(false)
    let healthy = Mutex(true)
}

struct Reply {
    var status: Int
    var contentType: String?
    var allow: String?
    var body: String
}

func request(_ method: String, _ path: String, port: UInt16) async throws -> Reply {
    var request = URLRequest(url: try #require(URL(string: "http://127.0.0.1:\(port)\(path)")))
    request.httpMethod = method
    request.timeoutInterval = 60  // a bound for a loaded machine (5 s timed out in a full parallel run), not a measurement
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    return Reply(
        status: http.statusCode,
        contentType: http.value(forHTTPHeaderField: "Content-Type"),
        allow: http.value(forHTTPHeaderField: "Allow"),
        body: String(decoding: data, as: UTF8.self))
}

/// Runs a listener on an ephemeral loopback port in a ServiceGroup for the duration of `body`,
/// then shuts the group down gracefully and checks that `run()` returned normally.
private func withServer(
    switches: Switches, metrics: MetricsRegistry, _ body: (UInt16) async throws -> Void
) async throws {
    let listener = try HTTPListener(
        port: 0, host: "127.0.0.1",
        readiness: { switches.ready.withLock { $0 } },
        readinessDetail: { "broker: 127.0.0.1:5672" },
        health: { switches.healthy.withLock { $0 } },
        metrics: { metrics.render() })
    try await withListenerRunning(listener) { port in try await body(port) }
}

/// `listener` in a ServiceGroup of its own while `body` runs; the group is shut down gracefully
/// on every path and must end without error.
private func withListenerRunning(_ listener: HTTPListener, _ body: (UInt16) async throws -> Void) async throws {
    let group = ServiceGroup(configuration: .init(services: [listener], logger: Logger(label: "test")))
    try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        do {
            let port = try await listener.waitUntilListening(timeout: .seconds(60))  // generous: a loaded machine is slow, not wrong
            #expect(port != 0)
            #expect(listener.listeningPort == port)
            try await body(port)
        } catch {
            await group.triggerGracefulShutdown()
            try? await tasks.waitForAll()
            throw error
        }
        await group.triggerGracefulShutdown()
        try await tasks.waitForAll()
    }
    #expect(listener.listeningPort == nil, "no longer listening after the shutdown")
}

@Suite struct HTTPListenerTests {
    @Test func answersHealthReadinessAndMetrics() async throws {
        let switches = Switches()
        let metrics = MetricsRegistry()
        let received = Counter(label: MetricName.commandsReceived, factory: metrics.factory)
        received.increment(by: 7)

        try await withServer(switches: switches, metrics: metrics) { port in
            let health = try await request("GET", "/healthz", port: port)
            #expect(health.status == 200)
            #expect(health.body == "ok")

            let notReady = try await request("GET", "/readyz", port: port)
            #expect(notReady.status == 503)
            #expect(notReady.body == "not ready\nbroker: 127.0.0.1:5672")

            switches.ready.withLock { $0 = true }
            let ready = try await request("GET", "/readyz", port: port)
            #expect(ready.status == 200)
            #expect(ready.body == "ready\nbroker: 127.0.0.1:5672", "the detail names the broker node in use")

            switches.healthy.withLock { $0 = false }
            #expect(try await request("GET", "/healthz", port: port).status == 503)

            let scrape = try await request("GET", "/metrics", port: port)
            #expect(scrape.status == 200)
            #expect(scrape.contentType?.hasPrefix("text/plain; version=0.0.4") == true)
            #expect(scrape.body.contains("# TYPE customer_worker_commands_received_total counter"))
            #expect(scrape.body.contains("\ncustomer_worker_commands_received_total 7\n"))

            received.increment()
            #expect(try await request("GET", "/metrics", port: port).body.contains("\ncustomer_worker_commands_received_total 8\n"))
        }
    }

    @Test func unknownPathsAndOtherMethods() async throws {
        try await withServer(switches: Switches(), metrics: MetricsRegistry()) { port in
            #expect(try await request("GET", "/", port: port).status == 404)
            #expect(try await request("GET", "/nope", port: port).status == 404)
            let post = try await request("POST", "/healthz", port: port)
            #expect(post.status == 405)
            #expect(post.allow == "GET")
            #expect(try await request("DELETE", "/metrics", port: port).status == 405)
        }
    }

    @Test func headIsAnsweredLikeGetWithoutABody() async throws {
        try await withServer(switches: Switches(), metrics: MetricsRegistry()) { port in
            let head = try await request("HEAD", "/healthz", port: port)
            #expect(head.status == 200)
            #expect(head.body.isEmpty)
        }
    }

    @Test func rejectsAHostThatIsNotAnAddress() {
        #expect(throws: HTTPListenerError.invalidHost("example.invalid")) {
            try HTTPListener(port: 0, host: "example.invalid", readiness: { true }, metrics: { "" })
        }
    }

    @Test func aBusyPortFailsRun() async throws {
        let first = try HTTPListener(port: 0, host: "127.0.0.1", readiness: { true }, metrics: { "" })
        try await withListenerRunning(first) { port in
            let second = try HTTPListener(port: port, host: "127.0.0.1", readiness: { true }, metrics: { "" })
            await #expect(throws: (any Error).self) { try await second.run() }
        }
    }
}

@Suite struct HTTPListenerShutdownTests {
    /// Cancellation (a ServiceGroup's last resort) ends `run()` too.
    @Test func cancellationEndsRun() async throws {
        let listener = try HTTPListener(port: 0, host: "127.0.0.1", readiness: { true }, metrics: { "" })
        let running = Task { try await listener.run() }
        let port = try await listener.waitUntilListening(timeout: .seconds(60))  // generous: a loaded machine is slow, not wrong
        #expect(try await request("GET", "/readyz", port: port).status == 200)
        running.cancel()
        _ = await running.result
        #expect(listener.listeningPort == nil)
    }
}
