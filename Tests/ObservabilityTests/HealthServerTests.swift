import CoreMetrics
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Observability
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
    request.timeoutInterval = 5
    let (data, response) = try await URLSession.shared.data(for: request)
    let http = try #require(response as? HTTPURLResponse)
    return Reply(
        status: http.statusCode,
        contentType: http.value(forHTTPHeaderField: "Content-Type"),
        allow: http.value(forHTTPHeaderField: "Allow"),
        body: String(decoding: data, as: UTF8.self))
}

/// Runs a server on an ephemeral loopback port for the duration of `body`, then cancels it and
/// checks that `run()` returned normally.
private func withServer(
    switches: Switches, metrics: MetricsRegistry, _ body: (UInt16) async throws -> Void
) async throws {
    let server = try HealthServer(
        port: 0, host: "127.0.0.1",
        readiness: { switches.ready.withLock { $0 } },
        readinessDetail: { "broker: 127.0.0.1:5672" },
        health: { switches.healthy.withLock { $0 } },
        metrics: { metrics.render() })
    let running = Task { try await server.run() }
    do {
        let port = try await server.waitUntilListening()
        #expect(port != 0)
        #expect(await server.listeningPort == port)
        try await body(port)
    } catch {
        running.cancel()
        _ = await running.result
        throw error
    }
    running.cancel()
    try await running.value
}

@Suite struct HealthServerTests {
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

    @Test func rejectsAHostThatIsNotAnAddress() {
        #expect(throws: HealthServerError.invalidHost("example.invalid")) {
            try HealthServer(port: 0, host: "example.invalid", readiness: { true }, metrics: { "" })
        }
    }

    @Test func aBusyPortFailsRun() async throws {
        let first = try HealthServer(port: 0, host: "127.0.0.1", readiness: { true }, metrics: { "" })
        let running = Task { try await first.run() }
        defer { running.cancel() }
        let port = try await first.waitUntilListening()
        let second = try HealthServer(port: port, host: "127.0.0.1", readiness: { true }, metrics: { "" })
        await #expect(throws: (any Error).self) { try await second.run() }
    }
}

@Suite struct HealthServerStopTests {
    @Test func stopEndsRunNormally() async throws {
        let server = try HealthServer(port: 0, host: "127.0.0.1", readiness: { true }, metrics: { "" })
        let running = Task { try await server.run() }
        let port = try await server.waitUntilListening()
        #expect(try await request("GET", "/readyz", port: port).status == 200)
        await server.stop()
        try await running.value
        #expect(await server.listeningPort == nil)
    }
}
