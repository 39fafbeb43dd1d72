import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `customer-worker health`, the HTTP listener of a real worker process, and its logs.
@Suite("Operations", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct OperationsTests {
    private func health(_ environment: [String: String]) async throws -> Int32 {
        try await TestBroker.runCapturing(WorkerProcess.executable, ["health"], environment: environment).status
    }

    @Test(arguments: StoreKind.all)
    func healthCommandChecksTheBrokerAndTheDatabase(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("health", store: kind)
        #expect(try await health(fixture.environment) == 0)
        var noBroker = fixture.environment
        noBroker["AMQP_URL"] = "amqp://guest:guest@127.0.0.1:1/%2f"
        #expect(try await health(noBroker) == 1)
        var unusableDatabase = fixture.environment
        unusableDatabase["DATABASE_URL"] = kind == .sqlite
            ? "/proc/customer-worker/customers.sqlite" : "postgres://worker:s3cr3t-pw@127.0.0.1:1/customers?connect_timeout=2"
        let result = try await TestBroker.runCapturing(WorkerProcess.executable, ["health"], environment: unusableDatabase)
        #expect(result.status == 1)
        #expect(!result.output.contains("s3cr3t-pw"), "the password leaked: \(result.output)")
        await fixture.tearDown()
    }

    /// `DATABASE_PATH` (the setting before `DATABASE_URL`) still works.
    @Test func theDeprecatedDatabasePathStillWorks() async throws {
        let fixture = try await WorkerFixture("legacy-path")
        var environment = fixture.environment
        environment["DATABASE_PATH"] = environment.removeValue(forKey: "DATABASE_URL")
        #expect(try await health(environment) == 0)
        await fixture.tearDown()
    }

    private func get(_ port: Int, _ path: String) async throws -> (Int, String) {
        let (data, response) = try await URLSession.shared.data(from: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        return ((response as? HTTPURLResponse)?.statusCode ?? 0, String(decoding: data, as: UTF8.self))
    }

    private func awaitReady(_ port: Int) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let (status, _) = try? await get(port, "/readyz"), status == 200 { return }
            try await Task.sleep(for: .milliseconds(100))
        }
        Issue.record("the worker never became ready")
    }

    @Test func metricsAndProbesOfARunningWorker() async throws {
        let fixture = try await WorkerFixture("metrics")
        let merchant = try await fixture.merchant()
        var environment = fixture.environment
        environment["HTTP_PORT"] = "0"  // the kernel's choice, read back from /proc (no race for a port)
        let worker = try WorkerProcess(environment: environment, logFile: fixture.directory.appendingPathComponent("worker.log").path)
        let port = try #require(try await worker.listeningPort(), "the worker never listened")
        try await awaitReady(port)
        #expect(try await get(port, "/healthz").0 == 200)

        let commands = [#"{"externalId":"m-1"}"#, #"{"externalId":"m-2"}"#, #"{"externalId":"m-1"}"#, #"{"externalId":""}"#]
            .map { CommandClient.Command(body: Array($0.utf8)) }
        _ = try await fixture.send(commands, apiKey: merchant.secretKey)
        let (status, metrics) = try await get(port, "/metrics")
        #expect(status == 200)
        let samples = metrics.split(separator: "\n").filter { !$0.hasPrefix("#") }
        func value(_ prefix: String) -> Double? {
            samples.first { $0.hasPrefix(prefix + " ") }.flatMap { Double($0.split(separator: " ").last!) }
        }
        #expect(value("customer_worker_commands_received_total") == 4)
        #expect(value(#"customer_worker_commands_handled_total{outcome="created",code="none"}"#) == 2)
        #expect(value(#"customer_worker_commands_handled_total{outcome="replayed",code="none"}"#) == 1)
        #expect(value(#"customer_worker_commands_handled_total{outcome="failed",code="validation_failed"}"#) == 1)
        #expect(value("customer_worker_replays_total") == 1)
        // Fair share (on by default): one merchant's commands all come through its one shard.
        let lanes = samples.filter { $0.hasPrefix("customer_worker_lane_deliveries_total{") }
            .compactMap { sample -> (lane: Substring, count: Double)? in
                guard let count = Double(sample.split(separator: " ").last!), count > 0,
                      let lane = sample.split(separator: "\"").dropFirst().first else { return nil }
                return (lane, count)
            }
        #expect(lanes.count == 1 && lanes.first?.count == 4 && lanes.first?.lane != "unsharded", "lanes: \(lanes)")
        #expect(metrics.contains("customer_worker_transaction_duration_seconds_bucket"))
        #expect(metrics.contains("customer_worker_confirm_duration_seconds_count"))
        #expect(metrics.contains("customer_worker_batch_size_count"))
        #expect(try await get(port, "/nope").0 == 404)

        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)
        await fixture.tearDown()
    }

    @Test func logsAreJSONLinesWithoutPersonalDataOrKeys() async throws {
        let fixture = try await WorkerFixture("logs")
        let merchant = try await fixture.merchant()
        var environment = fixture.environment
        environment["LOG_LEVEL"] = "trace"
        environment["LOG_FORMAT"] = "json"
        let logPath = fixture.directory.appendingPathComponent("worker.log").path
        let worker = try WorkerProcess(environment: environment, logFile: logPath)
        let sample = try String(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("schemas/examples/create-customer.full.json"), encoding: .utf8)
        let reply = try await fixture.send(json: sample, apiKey: merchant.secretKey)
        #expect(reply.properties.type == "CustomerCreated")
        worker.signal(SIGTERM)
        #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0)

        let log = try String(contentsOfFile: logPath, encoding: .utf8)
        let lines = log.split(separator: "\n")
        #expect(lines.count >= 3)
        for line in lines {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any]
            #expect(object?["timestamp"] is String && object?["level"] is String && object?["message"] is String, "\(line)")
        }
        #expect(log.contains("command handled"), "trace logs should describe each command")
        let command = try #require(try JSONSerialization.jsonObject(with: Data(sample.utf8)) as? [String: Any])
        let secrets = command.filter { $0.key != "externalId" }.compactMap { $0.value as? String } + [merchant.secretKey]
        for secret in secrets where secret.count > 3 {
            #expect(!log.contains(secret), "the log contains '\(secret)'")
        }
        await fixture.tearDown()
    }
}
