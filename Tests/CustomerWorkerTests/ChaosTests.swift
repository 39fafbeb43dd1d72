import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// Three replicas under routine faults, on a broker node of its own (restarted during the run):
/// kill -9 every few seconds (a replacement starts at once, as a supervisor would), consumer
/// connections closed by the broker, one broker restart, thousands of commands. Every command is
/// answered, one customer each, nothing dead-lettered.
@Suite("Worker: chaos", .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"), .serialized)
struct ChaosTests {
    static let commands = 3000
    static let rounds = 12

    @Test(arguments: StoreKind.all)
    func replicasUnderKillsClosedConnectionsAndABrokerRestart(_ kind: StoreKind) async throws {
        let port = TestBroker.port + 2
        try await TestBroker.brokerScript(["start"], port: port)
        do {
            try await run(kind, port: port)
        } catch {
            _ = try? await TestBroker.brokerScript(["stop"], port: port)
            throw error
        }
        _ = try await TestBroker.brokerScript(["stop"], port: port)
    }

    private func run(_ kind: StoreKind, port: Int) async throws {
        var url = try #require(URLComponents(string: TestBroker.url))
        url.port = port
        let fixture = try await WorkerFixture(
            "chaos", tuning: .init(prefetch: 64, deliveryLimit: 20, amqpURL: url.string), store: kind)
        var workers: [WorkerProcess] = []
        var started = 0
        func startWorker() throws -> WorkerProcess {
            started += 1
            return try WorkerProcess(environment: fixture.environment,
                                     logFile: fixture.directory.appendingPathComponent("worker-\(started).log").path)
        }
        do {
            let merchant = try await fixture.merchant()
            workers = try (0..<3).map { _ in try startWorker() }
            let batches = (0..<Self.rounds).map { round in
                (0..<(Self.commands / Self.rounds)).map { index in
                    let id = "chaos-\(round)-\(index)"
                    return CommandClient.Command(body: Array(#"{"externalId":"\#(id)","name":"Chaos \#(index)"}"#.utf8),
                                                 messageID: id, correlationID: id)
                }
            }
            var kills = 0, closed = 0
            for (round, batch) in batches.enumerated() {
                try await publishRetrying(fixture, batch, apiKey: merchant.secretKey)
                switch round % 4 {
                case 1, 3:
                    // kill -9 one replica (in turn) and start its replacement.
                    let victim = workers.remove(at: round % workers.count)
                    victim.signal(SIGKILL)
                    _ = try await victim.waitForExit(timeout: .seconds(5))
                    workers.append(try startWorker())
                    kills += 1
                case 2:
                    let name = "customer-worker \(ProcessInfo.processInfo.hostName) \(workers[0].pid) consumer"
                    closed += try await TestBroker.closeConnections(named: name, port: port)
                default:
                    if round == 4 {
                        try await TestBroker.brokerScript(["stop"], port: port)
                        try await TestBroker.brokerScript(["start"], port: port)
                    }
                }
                // The next round once the earlier rounds are done: each fault lands mid-stream.
                let done = round * batch.count
                let deadline = ContinuousClock.now + .seconds(60)
                while try await fixture.store.customerCount() < done, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            #expect(kills >= 5)
            let all = batches.flatMap { $0 }
            let replies = try await fixture.collectFromRepliesQueue(Set(all.map(\.messageID)), timeout: .seconds(120))
            let answered = Set(replies.compactMap(\.properties.correlationID))
            #expect(answered == Set(all.map(\.messageID)), "every command answered: \(answered.count) of \(all.count)")
            #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
            #expect(try await fixture.store.customerCount() == all.count, "one customer each")
            #expect(try await fixture.drain(fixture.configuration.names.deadLetterQueue).isEmpty, "nothing dead-lettered")
            print("chaos (\(kind)): \(all.count) commands, \(replies.count) replies, \(kills) kill -9, \(closed) connections closed, 1 broker restart, \(started) workers started")
            for worker in workers { worker.signal(SIGTERM) }
            for worker in workers { #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0) }
        } catch {
            for worker in workers { await worker.terminate() }
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    /// Publishes a batch, again while the broker is restarting (a repeat is a replay, not a second customer).
    private func publishRetrying(_ fixture: WorkerFixture, _ batch: [CommandClient.Command], apiKey: String) async throws {
        let deadline = ContinuousClock.now + .seconds(60)
        while true {
            do {
                return try await fixture.client.publish(batch, apiKey: apiKey, wantReplies: false)
            } catch where ContinuousClock.now < deadline {
                try await Task.sleep(for: .milliseconds(200))
            }
        }
    }
}

extension WorkerFixture {
    /// Takes replies off the replies queue (on the fixture's broker) until every id in `expected`
    /// is answered, then a second more.
    func collectFromRepliesQueue(_ expected: Set<String>, timeout: Duration) async throws -> [Delivery] {
        let session = AMQPSession(configuration: try ConnectionConfiguration(url: configuration.amqpURL), recovery: TestBroker.quickRecovery,
                                  logger: TestBroker.logger("replies"), name: "replies")
        do {
            try await session.consume(queue: configuration.names.repliesQueue)
            var replies: [Delivery] = []
            var answered = Set<String>()
            let deadline = ContinuousClock.now + timeout
            var settleUntil: ContinuousClock.Instant?
            while ContinuousClock.now < (settleUntil ?? deadline) {
                let batch = try await session.nextDeliveries(maximum: 500, wait: .milliseconds(300))
                replies += batch
                batch.forEach { answered.insert($0.properties.correlationID ?? "") }
                if let last = batch.last { await session.ack(last.tag, multiple: true) }
                if settleUntil == nil, expected.isSubset(of: answered) { settleUntil = ContinuousClock.now + .seconds(1) }
            }
            await session.close()
            return replies
        } catch {
            await session.close()
            throw error
        }
    }
}
