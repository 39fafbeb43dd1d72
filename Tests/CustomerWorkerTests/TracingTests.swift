import AMQP
import BrokerTestSupport
import ChildProcess
import CustomerWorker
import Foundation
import Testing

/// OpenTelemetry tracing, end to end: a real worker exporting OTLP/HTTP (protobuf) to a real
/// receiver (scripts/otlp-receiver.py, which decodes the export requests with the OpenTelemetry
/// protobuf types), commands carrying a sender's `traceparent`.
@Suite("Worker: tracing", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct TracingTests {
    /// A sender's trace context, as a W3C `traceparent`.
    struct SenderContext {
        let traceID = Self.hex(16)
        let spanID = Self.hex(8)
        var traceparent: String { "00-\(traceID)-\(spanID)-01" }

        static func hex(_ bytes: Int) -> String {
            (0..<bytes).map { _ in String(format: "%02x", UInt8.random(in: 1...255)) }.joined()
        }
    }

    @Test func aCommandsTraceContinuesThroughTheWorkerIntoItsReply() async throws {
        let fixture = try await WorkerFixture("tracing")
        let merchant = try await fixture.merchant()
        let receiver = try await OTLPReceiver.start(in: fixture.directory)
        let worker = try ObservedWorker(fixture, name: "worker", environment: [
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:\(receiver.port)", "OTEL_BSP_SCHEDULE_DELAY": "100",
            "OTEL_SERVICE_NAME": "customer-worker-test", "LOG_LEVEL": "debug", "LOG_FORMAT": "json",
        ])
        let first = SenderContext()
        let body = #"{"externalId":"traced-1","name":"Traced"}"#
        try await publish(fixture, body: body, messageID: "traced-a", traceparent: first.traceparent, apiKey: merchant.secretKey)
        let reply = try #require(try await awaitReply(fixture, correlationID: "traced-a"))

        // The reply carries the trace on: same trace, the worker's process span as its parent.
        let replyContext = try #require(reply.properties.headers["traceparent"]?.stringValue, "the reply has a traceparent")
        let parts = replyContext.split(separator: "-").map(String.init)
        #expect(parts.count == 4 && parts[1] == first.traceID, "same trace id: \(replyContext)")

        let spans = try await receiver.spans(until: { spans in
            Set(spans.filter { $0.traceID == first.traceID }.map(\.kind)).isSuperset(of: ["SPAN_KIND_CONSUMER"])
                && spans.contains { $0.kind == "SPAN_KIND_CLIENT" } && spans.contains { $0.kind == "SPAN_KIND_PRODUCER" }
        }, timeout: .seconds(60))
        let process = try #require(spans.first { $0.traceID == first.traceID && $0.kind == "SPAN_KIND_CONSUMER" })
        #expect(process.parentSpanID == first.spanID, "a child of the sender's span")
        #expect(process.spanID == parts[safe: 2], "the reply's parent is the process span")
        #expect(process.name == "process \(fixture.configuration.names.commandExchange)")
        #expect(process.serviceName == "customer-worker-test")
        #expect(process.attributes["messaging.system"] as? String == "rabbitmq")
        #expect(process.attributes["messaging.operation.type"] as? String == "process")
        #expect(process.attributes["messaging.destination.name"] as? String == fixture.configuration.names.commandExchange)
        // The shard the command was hashed to (fair share), not the command queue nothing routes to.
        let subscription = process.attributes["messaging.destination.subscription.name"] as? String
        #expect(subscription.map(fixture.configuration.fairShare.shardQueues.contains) == true, "\(subscription ?? "none")")
        #expect(process.attributes["messaging.rabbitmq.destination.routing_key"] as? String == fixture.configuration.names.commandRoutingKey)
        #expect(process.attributes["messaging.message.id"] as? String == "traced-a")
        #expect(process.attributes["customer_worker.reply.type"] as? String == "CustomerCreated")
        // The batch's transaction and its publish-and-confirm: linked to the command's span.
        for kind in ["SPAN_KIND_CLIENT", "SPAN_KIND_PRODUCER"] {
            let batch = spans.filter { $0.kind == kind }
            #expect(batch.contains { $0.links.contains { $0.traceID == first.traceID && $0.spanID == process.spanID } },
                    "a \(kind) span linked to the process span")
        }
        let publishSpan = try #require(spans.first { $0.kind == "SPAN_KIND_PRODUCER" })
        #expect(publishSpan.attributes["messaging.destination.name"] as? String == fixture.configuration.names.eventsExchange)
        #expect(spans.first { $0.kind == "SPAN_KIND_CLIENT" }?.attributes["db.system.name"] as? String == "sqlite")

        // The same command again, in another trace: the stored bytes, the current trace's headers.
        let second = SenderContext()
        try await publish(fixture, body: body, messageID: "traced-b", traceparent: second.traceparent, apiKey: merchant.secretKey)
        let replay = try #require(try await awaitReply(fixture, correlationID: "traced-b"))
        #expect(replay.properties.headers["x-replayed"] == .bool(true))
        #expect(replay.body == reply.body, "a replay is the stored reply, byte for byte")
        let replayContext = replay.properties.headers["traceparent"]?.stringValue ?? ""
        #expect(replayContext.split(separator: "-").dropFirst().first.map(String.init) == second.traceID,
                "the replay carries its own command's trace: \(replayContext)")

        // A malformed traceparent: the command is handled as ever, in a trace of its own, and the
        // warning about it does not carry the command's headers (its API key).
        try await publish(fixture, body: #"{"externalId":"traced-2"}"#, messageID: "traced-c", traceparent: "00-not-a-trace-01",
                          apiKey: merchant.secretKey)
        let untraced = try #require(try await awaitReply(fixture, correlationID: "traced-c"))
        #expect(untraced.properties.type == "CustomerCreated")
        let ownTrace = untraced.properties.headers["traceparent"]?.stringValue?.split(separator: "-").dropFirst().first.map(String.init)
        #expect(ownTrace != nil && ownTrace != first.traceID && ownTrace != second.traceID, "a trace of its own")

        // Log lines about a command carry its trace; no line carries a key.
        #expect(try await worker.stop() == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(!log.contains(merchant.secretKey), "the API key never reaches the log")
        let handled = log.split(separator: "\n").filter { $0.contains("command handled") }
        #expect(handled.contains { $0.contains(#""trace_id":"\#(first.traceID)""#) }, "the log line names the trace")
        await fixture.tearDown()
    }

    /// Without an OTLP endpoint nothing is exported and replies carry no trace headers.
    @Test func withoutAnEndpointTracingIsOff() async throws {
        let fixture = try await WorkerFixture("untraced")
        let merchant = try await fixture.merchant()
        let worker = try ObservedWorker(fixture, name: "worker")
        try await publish(fixture, body: #"{"externalId":"untraced-1"}"#, messageID: "untraced-a",
                          traceparent: SenderContext().traceparent, apiKey: merchant.secretKey)
        let reply = try #require(try await awaitReply(fixture, correlationID: "untraced-a"))
        #expect(reply.properties.headers["traceparent"] == nil)
        #expect(try await worker.stop() == 0)
        #expect(try !String(contentsOfFile: worker.log, encoding: .utf8).contains("tracing on"))
        await fixture.tearDown()
    }

    /// A tracing setting this build cannot honour stops the worker at start with the variable named.
    @Test func anUnsupportedExporterProtocolIsRefusedByName() async throws {
        let fixture = try await WorkerFixture("tracing-grpc")
        let worker = try ObservedWorker(fixture, name: "worker", environment: [
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        ])
        let status = try await worker.process.waitForExit(timeout: .seconds(30))
        #expect(status == 64, "a usage error, as for any invalid setting")
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && log.contains("http/protobuf"), "names the variable and the rule: \(log.suffix(500))")
        await fixture.tearDown()
    }

    private func publish(_ fixture: WorkerFixture, body: String, messageID: String, traceparent: String, apiKey: String) async throws {
        let session = try await TestBroker.session("traced-publisher")
        try await session.enableConfirms()
        let message = OutgoingMessage(
            exchange: fixture.configuration.names.commandExchange, routingKey: fixture.configuration.names.commandRoutingKey,
            body: Array(body.utf8),
            properties: MessageProperties(contentType: "application/json",
                                          headers: ["x-api-key": .string(apiKey), "traceparent": .string(traceparent)],
                                          persistent: true, correlationID: messageID, messageID: messageID))
        #expect(try await session.publish([message]) == [.confirmed])
        await session.close()
    }

    /// The events copy of the reply to `correlationID`, from the replies queue.
    private func awaitReply(_ fixture: WorkerFixture, correlationID: String) async throws -> Delivery? {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let replies = try await fixture.drain(fixture.configuration.names.repliesQueue, idle: .milliseconds(300))
            if let reply = replies.first(where: { $0.properties.correlationID == correlationID }) {
                Conformance.record([reply])
                return reply
            }
        }
        return nil
    }
}

/// scripts/otlp-receiver.py as a child process of the test (it dies with it), on a free port.
struct OTLPReceiver {
    struct Span {
        let traceID: String
        let spanID: String
        let parentSpanID: String
        let name: String
        let kind: String
        let serviceName: String
        let attributes: [String: Any]
        let links: [(traceID: String, spanID: String)]
    }

    struct NotStarted: Error, CustomStringConvertible {
        let log: String
        var description: String { "the OTLP receiver did not start: \(log)" }
    }

    let port: Int
    let spansFile: String

    static func start(in directory: URL) async throws -> OTLPReceiver {
        let spansFile = directory.appendingPathComponent("spans.jsonl").path
        let output = directory.appendingPathComponent("otlp-receiver.log").path
        let script = TestBroker.repositoryRoot.appendingPathComponent("scripts/otlp-receiver.py").path
        let pid = try TestBroker.spawn("/usr/bin/env", ["python3", script, "--port", "0", "--out", spansFile,
                                                        "--parent-pid", String(getpid())],
                                       output: output, errorsToOutput: true)
        TestResources.onExit("OTLP receiver \(pid)") {
            kill(pid, SIGTERM)
            _ = try? await waitForExit(pid)
        }
        let deadline = ContinuousClock.now + .seconds(30)
        while ContinuousClock.now < deadline {
            let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
            if let line = text.split(separator: "\n").first(where: { $0.hasPrefix("listening on ") }),
               let port = Int(line.dropFirst("listening on ".count)) {
                return OTLPReceiver(port: port, spansFile: spansFile)
            }
            if ChildProcess.exitStatus(pid) != nil { throw NotStarted(log: text) }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw NotStarted(log: (try? String(contentsOfFile: output, encoding: .utf8)) ?? "")
    }

    private static func waitForExit(_ pid: pid_t) async throws {
        let deadline = ContinuousClock.now + .seconds(10)
        while ChildProcess.exitStatus(pid) == nil, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        if ChildProcess.exitStatus(pid) == nil { kill(pid, SIGKILL) }
    }

    /// Every span received so far (each once: an export may repeat spans), polled until `done`
    /// says they are enough or `timeout` passes.
    func spans(until done: ([Span]) -> Bool, timeout: Duration) async throws -> [Span] {
        let deadline = ContinuousClock.now + timeout
        var spans: [Span] = []
        while ContinuousClock.now < deadline {
            spans = read()
            if done(spans) { return spans }
            try await Task.sleep(for: .milliseconds(100))
        }
        return spans
    }

    private func read() -> [Span] {
        let text = (try? String(contentsOfFile: spansFile, encoding: .utf8)) ?? ""
        var seen = Set<String>()
        return text.split(separator: "\n").compactMap { line -> Span? in
            guard let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any],
                  let spanID = object["span_id"] as? String, seen.insert(spanID).inserted else { return nil }
            let links = (object["links"] as? [[String: Any]] ?? []).map {
                (traceID: $0["trace_id"] as? String ?? "", spanID: $0["span_id"] as? String ?? "")
            }
            return Span(traceID: object["trace_id"] as? String ?? "", spanID: spanID, parentSpanID: object["parent_span_id"] as? String ?? "",
                        name: object["name"] as? String ?? "", kind: object["kind"] as? String ?? "",
                        serviceName: object["service_name"] as? String ?? "", attributes: object["attributes"] as? [String: Any] ?? [:],
                        links: links)
        }
    }
}

extension Array {
    subscript(safe index: Int) -> Element? { indices.contains(index) ? self[index] : nil }
}
