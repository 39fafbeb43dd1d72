import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// `customer-worker publish --wait` and `customer-worker replies` as a user runs them.
@Suite("Client commands", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct ClientCommandTests {
    private func cli(_ fixture: WorkerFixture, _ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String) {
        var arguments = arguments
        if let input {
            let file = fixture.directory.appendingPathComponent("input-\(UUID().uuidString).jsonl").path
            try input.write(toFile: file, atomically: true, encoding: .utf8)
            arguments.append(file)
        }
        return try await TestBroker.runCapturing(WorkerProcess.executable, arguments, environment: fixture.environment, errorsToOutput: false)
    }

    @Test func publishWaitsForRepliesAndSaysHowTheyWent() async throws {
        let fixture = try await WorkerFixture("cli")
        let merchant = try await fixture.merchant()
        let key = merchant.secretKey
        let (created, mixed, read) = try await fixture.withWorker {
            let created = try await cli(fixture, ["publish", "--api-key", key, "--wait", "--message-id", "cli-1"], input: #"{"externalId":"cli-1"}"#)
            let mixed = try await cli(fixture, ["publish", "--api-key", key, "--wait"], input: "{\"externalId\":\"cli-2\"}\n{\"externalId\":\"\"}\n")
            let read = try await cli(fixture, ["replies", "--count", "3", "--timeout", "5"])
            return (created, mixed, read)
        }
        #expect(created.status == 0)
        let reply = try #require(try JSONSerialization.jsonObject(with: Data(created.output.utf8)) as? [String: Any])
        #expect(reply["type"] as? String == "CustomerCreated")

        #expect(mixed.status == 1, "one of the two replies is a CustomerCreateFailed")
        let lines = mixed.output.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(Set(lines.compactMap { (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["type"] as? String })
            == ["CustomerCreated", "CustomerCreateFailed"])

        #expect(read.status == 0)
        #expect(read.output.split(separator: "\n").count == 3)
        await fixture.tearDown()
    }

    @Test func publishTimesOutWithStatusThreeWhenNoWorkerAnswers() async throws {
        let fixture = try await WorkerFixture("cli-timeout")
        let merchant = try await fixture.merchant()
        let result = try await cli(fixture, ["publish", "--api-key", merchant.secretKey, "--wait", "--timeout", "1"], input: #"{"externalId":"late"}"#)
        #expect(result.status == 3)
        #expect(result.output.isEmpty)
        await fixture.tearDown()
    }

    /// `AMQP_URL` naming a node that is down beside the live one: the client and the worker both
    /// find the live node, whichever order they try them in.
    @Test func aNodeListWithADeadNodeStillWorks() async throws {
        let fixture = try await WorkerFixture("cli-nodes")
        let merchant = try await fixture.merchant()
        var environment = fixture.environment
        environment["AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1/%2f," + TestBroker.url
        _ = try WorkerProcess(  // killed when the test ends (TestResources)
            environment: environment, logFile: fixture.directory.appendingPathComponent("nodes.log").path)
        let file = fixture.directory.appendingPathComponent("nodes.jsonl").path
        try #"{"externalId":"nodes-1"}"#.write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await TestBroker.runCapturing(
            WorkerProcess.executable, ["publish", "--api-key", merchant.secretKey, "--wait", "--timeout", "30", file],
            environment: environment, errorsToOutput: false)
        #expect(result.status == 0)
        #expect(result.output.contains("\"CustomerCreated\""))
        await fixture.tearDown()
    }
}
