/// Why a benchmark run could not produce its figures.
public enum BenchmarkError: Error, Sendable, CustomStringConvertible {
    case setupFailed(String)
    case repliesMissing(phase: String, received: Int, expected: Int, waited: Duration)
    case commandRefused(String)
    case relayFailed(String)
    case worker(String)

    public var description: String {
        switch self {
        case .setupFailed(let reason):
            "benchmark set-up failed: \(reason)"
        case .repliesMissing(let phase, let received, let expected, let waited):
            "\(phase): \(received) of \(expected) replies, then none for \(waited)"
        case .commandRefused(let outcome):
            "the broker did not take a command (\(outcome)): is the command queue bound?"
        case .relayFailed(let reason):
            "the ceiling's relay failed: \(reason)"
        case .worker(let problem):
            problem
        }
    }
}
