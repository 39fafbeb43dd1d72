import Histogram

/// Latencies in microseconds (HdrHistogram, three significant digits, up to an hour).
struct LatencyHistogram: Sendable {
    private var histogram = Histogram<UInt64>(highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: .three)

    var count: Int { Int(histogram.totalCount) }

    mutating func record(_ latency: Duration) {
        let microseconds = max(0, latency.seconds * 1e6)
        _ = histogram.record(UInt64(min(microseconds, 3_600_000_000)))
    }

    /// The figures the report prints, in milliseconds.
    var summary: LatencySummary {
        func milliseconds(_ microseconds: UInt64) -> Double { Double(microseconds) / 1000 }
        return LatencySummary(
            p50: milliseconds(histogram.valueAtPercentile(50)), p90: milliseconds(histogram.valueAtPercentile(90)),
            p99: milliseconds(histogram.valueAtPercentile(99)), p999: milliseconds(histogram.valueAtPercentile(99.9)),
            max: milliseconds(histogram.max))
    }
}

/// Publish → reply latency percentiles in milliseconds.
public struct LatencySummary: Sendable, Codable, Equatable {
    public var p50: Double
    public var p90: Double
    public var p99: Double
    public var p999: Double
    public var max: Double

    enum CodingKeys: String, CodingKey {
        case p50, p90, p99, p999 = "p99_9", max
    }
}
