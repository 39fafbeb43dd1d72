import BrokerTestSupport
import Foundation
import Testing

/// The benchmark is a product of its own: the worker's binary (and so its image) links no relay.
@Suite("Executables", .closesResources)
struct ExecutablesTests {
    private func links(_ executable: String, _ symbol: String) throws -> Bool {
        let binary = try Data(contentsOf: URL(fileURLWithPath: executable), options: .alwaysMapped)
        return binary.range(of: Data(symbol.utf8)) != nil
    }

    @Test func theWorkerBinaryCarriesNoRelayAndTheBenchDoes() throws {
        #expect(try !links(WorkerProcess.executable, "cw_relay_new"))
        #expect(try links(WorkerProcess.benchExecutable, "cw_relay_new"))
    }

    @Test func theWorkerBinaryCarriesNoFaultInjection() throws {
        #expect(try !links(WorkerProcess.executable, FaultInjection.crashOnExternalIDVariable))
        #expect(try links(WorkerProcess.faultInjectingExecutable, FaultInjection.crashOnExternalIDVariable))
    }

    @Test func benchIsNoLongerAWorkerSubcommand() async throws {
        let result = try await TestBroker.runCapturing(WorkerProcess.executable, ["bench", "--messages", "1"])
        #expect(result.status != 0, "\(result.output)")
        let bench = try await TestBroker.runCapturing(WorkerProcess.benchExecutable, ["--help"])
        #expect(bench.status == 0)
        #expect(bench.output.contains("USAGE: customer-worker-bench"), "\(bench.output)")
    }
}
