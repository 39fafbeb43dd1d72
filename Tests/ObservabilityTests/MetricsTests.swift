import CoreMetrics
import Observability
import Testing

@Suite struct MetricsRegistryTests {
    @Test func rendersTheWorkerMetricsInPrometheusTextFormat() {
        let metrics = MetricsRegistry()
        let factory = metrics.factory
        Counter(label: MetricName.commandsReceived, factory: factory).increment(by: 3)
        Counter(label: MetricName.commandsHandled, dimensions: [("outcome", "failed"), ("code", "validation_failed")], factory: factory)
            .increment()
        Counter(label: MetricName.commandsHandled, dimensions: [("outcome", "created"), ("code", "none")], factory: factory)
            .increment(by: 2)
        Recorder(label: MetricName.batchSize, aggregate: true, factory: factory).record(3)
        CoreMetrics.Timer(label: MetricName.handlingDuration, preferredDisplayUnit: .seconds, factory: factory)
            .recordMilliseconds(3)
        Gauge(label: MetricName.unackedDeliveries, factory: factory).record(17)

        let text = metrics.render()
        let lines = text.split(separator: "\n").map(String.init)
        #expect(lines.contains("# TYPE customer_worker_commands_received_total counter"))
        #expect(lines.contains("customer_worker_commands_received_total 3"))
        #expect(lines.contains(#"customer_worker_commands_handled_total{outcome="failed",code="validation_failed"} 1"#))
        #expect(lines.contains(#"customer_worker_commands_handled_total{outcome="created",code="none"} 2"#))
        #expect(lines.contains("# TYPE customer_worker_unacked_deliveries gauge"))
        #expect(lines.contains("customer_worker_unacked_deliveries 17.0"))

        // Batch sizes: powers of two up to 1024.
        #expect(lines.contains("# TYPE customer_worker_batch_size histogram"))
        #expect(lines.contains(#"customer_worker_batch_size_bucket{le="2.0"} 0"#))
        #expect(lines.contains(#"customer_worker_batch_size_bucket{le="4.0"} 1"#))
        #expect(lines.contains(#"customer_worker_batch_size_bucket{le="1024.0"} 1"#))
        #expect(lines.contains("customer_worker_batch_size_count 1"))

        // Durations in seconds, from 0.5 ms.
        #expect(lines.contains("# TYPE customer_worker_handling_duration_seconds histogram"))
        #expect(lines.contains(#"customer_worker_handling_duration_seconds_bucket{le="0.0005"} 0"#))
        #expect(lines.contains(#"customer_worker_handling_duration_seconds_bucket{le="0.005"} 1"#))
        #expect(lines.contains(#"customer_worker_handling_duration_seconds_bucket{le="10.0"} 1"#))
        #expect(lines.contains("customer_worker_handling_duration_seconds_count 1"))

        // HELP lines for the known names, families sorted by name, every line well-formed.
        #expect(lines.contains { $0.hasPrefix("# HELP customer_worker_commands_handled_total ") })
        let typeNames = lines.filter { $0.hasPrefix("# TYPE ") }.map { $0.split(separator: " ")[2] }
        #expect(typeNames == typeNames.sorted())
        for line in lines where !line.hasPrefix("#") {
            #expect(line.wholeMatch(of: /[a-z_]+(\{[^}]*\})? [0-9.e+-]+/) != nil, "\(line)")
        }
    }

    @Test func everyMetricNameHasHelpText() {
        let names = [
            MetricName.commandsReceived, MetricName.commandsHandled, MetricName.replays, MetricName.batchSize,
            MetricName.handlingDuration, MetricName.transactionDuration, MetricName.confirmDuration,
            MetricName.reconnects, MetricName.unackedDeliveries, MetricName.transientFailures,
        ]
        #expect(Set(names).count == 10)
        for name in names {
            #expect(MetricName.help[name] != nil, "\(name)")
            #expect(name.hasPrefix("customer_worker_"))
        }
    }

    @Test func registriesAreIndependent() {
        let first = MetricsRegistry()
        let second = MetricsRegistry()
        Counter(label: MetricName.reconnects, factory: first.factory).increment()
        #expect(first.render().contains("customer_worker_reconnects_total 1"))
        #expect(!second.render().contains("customer_worker_reconnects_total"))
        var bytes: [UInt8] = []
        first.emit(into: &bytes)
        #expect(String(decoding: bytes, as: UTF8.self) == first.render())
    }
}
