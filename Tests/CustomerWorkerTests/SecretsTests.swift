import BrokerTestSupport
import Foundation
import Testing

/// Passwords in URLs never reach standard error or --help, whatever goes wrong.
@Suite("Secrets are never echoed", .closesResources)
struct SecretsTests {
    private let password = "s3cret-Pa55word"

    private func run(_ arguments: [String], _ environment: [String: String]) async throws -> (status: Int32, output: String) {
        try await TestBroker.runCapturing(WorkerProcess.executable, arguments, environment: environment)
    }

    private var database: String {
        FileManager.default.temporaryDirectory.appendingPathComponent(TestBroker.uniqueName("secrets")).appendingPathComponent("c.sqlite").path
    }

    @Test(arguments: [
        // Invalid URLs: an unknown query parameter, a bad heartbeat, a wrong scheme, no host.
        "amqp://worker:PASSWORD@127.0.0.1:1/%2f?bogus=1",
        "amqp://worker:PASSWORD@127.0.0.1:1/%2f?heartbeat=forever",
        "http://worker:PASSWORD@127.0.0.1:1/",
        "amqp://worker:PASSWORD@/vhost",
        // A valid URL nothing answers on.
        "amqp://worker:PASSWORD@127.0.0.1:1/%2f",
    ])
    func aBadAMQPURLsPasswordIsNotInTheOutput(template: String) async throws {
        let url = template.replacingOccurrences(of: "PASSWORD", with: password)
        for command in [["run"], ["health"], ["publish", "/dev/null"], ["replies", "--count", "1"]] {
            let result = try await run(command, ["AMQP_URL": url, "DATABASE_PATH": database, "LOG_LEVEL": "trace"])
            #expect(result.status != 0, "\(command) with \(template)")
            #expect(!result.output.isEmpty)
            #expect(!result.output.contains(password), "\(command): \(result.output)")
        }
    }

    @Test func theFlagIsRedactedToo() async throws {
        let result = try await run(["run", "--amqp-url", "amqp://worker:\(password)@127.0.0.1:1/%2f?bogus=1"], ["DATABASE_PATH": database])
        #expect(result.status == 64)
        #expect(result.output.contains("AMQP_URL"))
        #expect(result.output.contains("worker:***@"))
        #expect(!result.output.contains(password))
    }

    @Test func helpShowsTheDefaultURLWithoutItsPassword() async throws {
        let helps = ["run", "health", "publish"].map { (WorkerProcess.executable, [$0, "--help"]) }
            + [(WorkerProcess.benchExecutable, ["--help"])]
        for (executable, arguments) in helps {
            let result = try await TestBroker.runCapturing(executable, arguments, environment: [:])
            #expect(result.status == 0)
            #expect(result.output.contains("amqp://guest:***@127.0.0.1:5672"), "\(arguments)")
            #expect(!result.output.contains("guest:guest"), "\(arguments)")
        }
    }
}
