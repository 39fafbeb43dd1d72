import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// Three replicas under routine faults, on the three-node cluster (a node is restarted during the
/// run, so the suite runs its tests one at a time): kill -9 every few seconds (a replacement
/// starts at once, as a supervisor would), consumer connections closed by the broker, thousands
/// of commands. Every command is answered, one customer each, nothing dead-lettered.
extension ClusterTests {
    static let chaosCommands = 3000
    static let chaosRounds = 12

    @Test(arguments: StoreKind.all)
    func chaosReplicasUnderKillsClosedConnectionsAndANodeRestart(_ kind: StoreKind) async throws {
        let clusterURL = try #require(TestBroker.clusterURL, "AMQP_CLUSTER_URL is not set (scripts/test.sh starts the cluster)")
        let nodes = try ConnectionConfiguration.list(clusterURL)
        let fixture = try await WorkerFixture("chaos", tuning: .init(prefetch: 64, deliveryLimit: 20, amqpURL: clusterURL), store: kind)
        var workers: [WorkerProcess] = []
        var started = 0
        func startWorker() throws -> WorkerProcess {
            started += 1
            return try WorkerProcess(environment: fixture.environment,
                                     logFile: fixture.directory.appendingPathComponent("worker-\(started).log").path)
        }
        let restarted = nodes[1].port
        do {
            let merchant = try await fixture.merchant()
            workers = try (0..<3).map { _ in try startWorker() }
            let batches = (0..<Self.chaosRounds).map { round in
                (0..<(Self.chaosCommands / Self.chaosRounds)).map { index in
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
                    // rabbitmqctl lists the whole cluster's connections: the first node that answers will do.
                    closed += try await TestBroker.closeConnections(named: name, port: nodes[0].port)
                default:
                    if round == 4 {
                        try await TestBroker.brokerScript(["ctl", "-q", "stop_app"], port: restarted)
                        try await TestBroker.brokerScript(["ctl", "-q", "start_app"], port: restarted)
                    }
                }
                // The next round once the earlier rounds are done: each fault lands mid-stream.
                let done = round * batch.count
                let deadline = ContinuousClock.now + .seconds(60)
                while try await fixture.store.customerCount() < done, ContinuousClock.now < deadline {
                    try await Task.sleep(for: .milliseconds(50))
                }
            }
            let all = batches.flatMap { $0 }
            let names = fixture.configuration.names
            let replies = try await fixture.collect(names.repliesQueue, until: Set(all.map(\.messageID)), timeout: .seconds(120))
            let answered = Set(replies.compactMap(\.properties.correlationID))
            #expect(kills >= 5)
            #expect(answered == Set(all.map(\.messageID)), "every command answered: \(answered.count) of \(all.count)")
            #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
            #expect(try await fixture.store.customerCount() == all.count, "one customer each")
            #expect(try await fixture.collect(names.deadLetterQueue, until: [], timeout: .seconds(1)).isEmpty, "nothing dead-lettered")
            print("chaos (\(kind)): \(all.count) commands, \(replies.count) replies, \(kills) kill -9, \(closed) connections closed, node \(restarted) restarted, \(started) workers started")
            for worker in workers { worker.signal(SIGTERM) }
            for worker in workers { #expect(try await worker.waitForExit(timeout: .seconds(15)) == 0) }
        } catch {
            for worker in workers { await worker.terminate() }
            _ = try? await TestBroker.brokerScript(["ctl", "-q", "start_app"], port: restarted)
            await fixture.deleteTopology(on: nodes)
            await fixture.tearDown()
            throw error
        }
        await fixture.deleteTopology(on: nodes)
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
    /// Takes messages off `queue` on the fixture's broker until every id in `expected` is among
    /// their correlation ids, then a second more (for duplicates).
    func collect(_ queue: String, until expected: Set<String>, timeout: Duration) async throws -> [Delivery] {
        let session = AMQPSession(nodes: try configuration.amqpNodes, recovery: TestBroker.quickRecovery,
                                  logger: TestBroker.logger("collect"), name: "collect")
        do {
            try await session.consume(queue: queue)
            var messages: [Delivery] = []
            var seen = Set<String>()
            let deadline = ContinuousClock.now + timeout
            var settleUntil: ContinuousClock.Instant?
            while ContinuousClock.now < (settleUntil ?? deadline) {
                let batch = try await session.nextDeliveries(maximum: 500, wait: .milliseconds(300))
                messages += batch
                batch.forEach { seen.insert($0.properties.correlationID ?? "") }
                if let last = batch.last { await session.ack(last.tag, multiple: true) }
                if settleUntil == nil, expected.isSubset(of: seen) { settleUntil = ContinuousClock.now + .seconds(1) }
            }
            await session.close()
            return messages
        } catch {
            await session.close()
            throw error
        }
    }

    /// Deletes the fixture's queues and exchanges on another broker than the tests' own.
    func deleteTopology(on nodes: [ConnectionConfiguration]) async {
        let admin = AMQPSession(nodes: nodes, logger: TestBroker.logger("admin"))
        await configuration.deleteTopology(admin)
        await admin.close()
    }
}
