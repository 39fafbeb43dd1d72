import BrokerTestSupport
import Foundation
import Testing

/// The benchmark and its relay are products of their own: the worker's binary (and so its image) links no relay.
@Suite("Executables", .closesResources)
struct ExecutablesTests {
    private func links(_ executable: String, _ symbol: String) throws -> Bool {
        let binary = try Data(contentsOf: URL(fileURLWithPath: executable), options: .alwaysMapped)
        return binary.range(of: Data(symbol.utf8)) != nil
    }

    /// The ceiling's relay is a process of its own, which the bench starts: neither the worker
    /// nor the bench carries it.
    @Test func onlyTheRelayExecutableCarriesTheRelay() throws {
        #expect(try !links(WorkerProcess.executable, "cw_relay_new"))
        #expect(try !links(WorkerProcess.benchExecutable, "cw_relay_new"))
        #expect(try links(WorkerProcess.relayExecutable, "cw_relay_new"))
    }

    @Test func theRelayRefusesBadArgumentsNamingTheRule() async throws {
        let usage = try await TestBroker.runCapturing(WorkerProcess.relayExecutable, [])
        #expect(usage.status == 2 && usage.output.contains("usage:"), "\(usage.output)")
        let arguments = ["127.0.0.1", "70000", "guest", "/", "q", "256", "x", "k", "/nonexistent", "CustomerCreated", "application/json", "w"]
        let port = try await TestBroker.runCapturing(WorkerProcess.relayExecutable, arguments, environment: ["RELAY_AMQP_PASSWORD": "guest"])
        #expect(port.status == 2 && port.output.contains("PORT: a number in 1...65535, not '70000'"), "\(port.output)")
        var noPassword = arguments
        noPassword[1] = "5672"
        let password = try await TestBroker.runCapturing(WorkerProcess.relayExecutable, noPassword, environment: [:])
        #expect(password.status == 2 && password.output.contains("RELAY_AMQP_PASSWORD is not set"), "\(password.output)")
        let file = try await TestBroker.runCapturing(WorkerProcess.relayExecutable, noPassword, environment: ["RELAY_AMQP_PASSWORD": "guest"])
        #expect(file.status == 2 && file.output.contains("cannot read the reply from /nonexistent"), "\(file.output)")
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
