import AMQP
import Testing
import WorkerTracing

/// When tracing is on, and which values are refused before swift-otel would stop the process.
@Suite("Tracing configuration")
struct TracingConfigurationTests {
    private let endpoint = ["OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"]

    @Test func offUnlessAnEndpointIsSet() throws {
        #expect(try TracingBackend.enabledEnvironment([:]) == nil)
        #expect(try TracingBackend.enabledEnvironment(["OTEL_EXPORTER_OTLP_ENDPOINT": ""]) == nil)
        #expect(try TracingBackend.enabledEnvironment(["OTEL_SERVICE_NAME": "x"]) == nil)
        #expect(try TracingBackend.enabledEnvironment(endpoint) != nil)
        #expect(try TracingBackend.enabledEnvironment(["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "https://c/v1/traces"]) != nil)
    }

    @Test func theSpecificationsOffSwitchesWork() throws {
        #expect(try TracingBackend.enabledEnvironment(endpoint.merging(["OTEL_SDK_DISABLED": "true"]) { $1 }) == nil)
        #expect(try TracingBackend.enabledEnvironment(endpoint.merging(["OTEL_TRACES_EXPORTER": "none"]) { $1 }) == nil)
        #expect(try TracingBackend.enabledEnvironment(endpoint.merging(["OTEL_SDK_DISABLED": "false"]) { $1 }) != nil)
    }

    @Test(arguments: [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "grpc", "http/protobuf"),
        ("OTEL_PROPAGATORS", "tracecontext,baggage", "baggage"),
        ("OTEL_TRACES_SAMPLER", "jaeger_remote", "parentbased_always_on"),
        ("OTEL_TRACES_EXPORTER", "zipkin", "otlp or none"),
        ("OTEL_SDK_DISABLED", "maybe", "true or false"),
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "http://"),
    ])
    func refusedValuesNameTheVariableAndTheRule(variable: String, value: String, rule: String) {
        let environment = endpoint.merging([variable: value]) { $1 }
        #expect {
            try TracingBackend.enabledEnvironment(environment)
        } throws: { error in
            let text = "\(error)"
            return text.contains(variable) && text.contains(value) && text.contains(rule)
        }
    }

    @Test func w3cContextTravelsInAMQPHeaders() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        let headers: [String: FieldValue] = ["traceparent": .string(traceparent), "tracestate": .bytes(Array("a=1".utf8)), "n": .int(1)]
        let extractor = AMQPHeadersExtractor()
        #expect(extractor.extract(key: "traceparent", from: headers) == traceparent)
        #expect(extractor.extract(key: "tracestate", from: headers) == "a=1", "a long string sent as bytes")
        #expect(extractor.extract(key: "n", from: headers) == nil)
        #expect(extractor.extract(key: "absent", from: headers) == nil)
        var written: [String: FieldValue] = [:]
        AMQPHeadersInjector().inject(traceparent, forKey: "traceparent", into: &written)
        #expect(written == ["traceparent": .string(traceparent)])
    }
}
