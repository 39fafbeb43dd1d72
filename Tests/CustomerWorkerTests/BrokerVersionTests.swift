import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// What RabbitMQ 4.x changed under the worker, checked on whichever broker the run uses
/// (scripts/test.sh runs every suite on 3.10 and on 4.x): the worker must behave the same.
@Suite("Worker on RabbitMQ 3.10 and 4.x", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct BrokerVersionTests {
    /// Each queue of the broker: its type, by name.
    private func queueTypes() async throws -> [String: String] {
        let listing = try await TestBroker.brokerScript(["ctl", "-q", "list_queues", "--no-table-headers", "name", "type"])
        var types: [String: String] = [:]
        for line in listing.split(separator: "\n") {
            let fields = line.split(separator: "\t").map { $0.trimmingCharacters(in: .whitespaces) }
            if fields.count == 2 { types[fields[0]] = fields[1] }
        }
        return types
    }

    @Test func theBrokerIsTheVersionTheRunNames() async throws {
        let version = try await TestBroker.brokerScript(["version"]).trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(version.hasPrefix(TestBroker.isRabbitMQ4 ? "4." : "3.10."), "RABBITMQ=\(TestBroker.rabbitMQ), broker \(version)")
    }

    /// Every queue the worker declares is replicated: the replies queue too, since RabbitMQ 4.x
    /// nacks what is routed to a classic queue whose node is down (every reply, then).
    @Test func theWorkerDeclaresOnlyQuorumQueues() async throws {
        let fixture = try await WorkerFixture("queue-types")
        let types = try await queueTypes()
        for queue in fixture.configuration.topology.queues.map(\.name) {
            #expect(types[queue] == "quorum", "\(queue): \(types[queue] ?? "missing")")
        }
        await fixture.tearDown()
    }

    /// `dead-letters list` returns what it read, and each return counts as a delivery: 4.x gives a
    /// quorum queue a limit of 20 unless told otherwise, and would drop the dead letters then.
    @Test func deadLettersSurviveBeingReadMoreOftenThanTheBrokersDefaultLimit() async throws {
        let fixture = try await WorkerFixture("dead-reads")
        let merchant = try await fixture.merchant()
        try await fixture.deadLetter([(#"{"externalId":"read-often"}"#, "read-often")], apiKey: merchant.secretKey)
        for read in 1...25 {
            let queue = try await DeadLetterQueue(configuration: fixture.configuration, logger: TestBroker.logger("dead-letters"))
            let letters = await Result { try await queue.browse(limit: 10, wait: .seconds(5)) }
            await queue.close()
            let ids = try letters.get().map(\.id)
            try #require(ids == ["read-often"], "read \(read): \(ids)")
            // The read's return must reach the queue before the next read looks.
            try await fixture.expectCount(fixture.configuration.names.deadLetterQueue, 1)
        }
        await fixture.tearDown()
    }

    /// Replies the broker keeps refusing (a queue bound to the events exchange that takes
    /// nothing): after its publishing attempts the worker returns the command with
    /// `basic.reject`, which counts toward the delivery limit on both brokers (4.3 no longer
    /// counts `basic.nack`), so the command reaches its last delivery the same way on both and is
    /// handed back there (its transaction committed: never dead-lettered). Once the refusing
    /// queue is gone, it is answered and acknowledged.
    @Test func aCommandTheWorkerGivesBackReachesItsLastDeliveryOnBothBrokers() async throws {
        let fixture = try await WorkerFixture("given-back", tuning: .init(deliveryLimit: 2))
        let merchant = try await fixture.merchant()
        let names = fixture.configuration.names
        let refusing = "\(names.eventsExchange).refusing"
        let admin = try await TestBroker.session(TestBroker.uniqueName("given-back.admin"))
        TestResources.onExit("queue \(refusing)") { try? await admin.deleteQueue(refusing) }
        try await admin.declare(Topology(queues: [.init(name: refusing, arguments: ["x-max-length": .int(0), "x-overflow": "reject-publish"])],
                                         bindings: [.init(queue: refusing, exchange: names.eventsExchange, routingKey: "#")]))
        let worker = try ObservedWorker(fixture, name: "worker", environment: ["TRANSIENT_ATTEMPTS": "1", "LOG_LEVEL": "info"])
        try await fixture.publishRaw([(#"{"externalId":"refused-replies"}"#, "refused-replies", nil)], apiKey: merchant.secretKey)
        _ = try await worker.pollMetric("customer_worker_handed_back_total", atLeast: 1, timeout: .seconds(60))
        #expect(try await fixture.messageCount(names.deadLetterQueue) == 0, "a stored command was dead-lettered")

        try await admin.deleteQueue(refusing)
        let settled = try await waitFor(timeout: .seconds(60)) {
            let listing = try await TestBroker.brokerScript(["ctl", "-q", "list_queues", "--no-table-headers", "name", "messages"])
            let queues = Set(fixture.configuration.commandQueues)
            let lines = listing.split(separator: "\n").filter { queues.contains(String($0.prefix { $0 != "\t" })) }
            return lines.count == queues.count && lines.allSatisfy { $0.hasSuffix("\t0") }
        }
        #expect(settled, "the command was not acknowledged once its replies were taken")
        #expect(try await fixture.messageCount(names.deadLetterQueue) == 0)
        #expect(try await fixture.store.customerCount() == 1)
        #expect(try await worker.stop() == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("commands returned to the queue"), "returned (counted) before its last delivery")
        await fixture.tearDown()
    }

    /// RabbitMQ 4.x enforces consumer timeouts on quorum queues by cancelling the consumer
    /// (`basic.cancel`, which the worker asks for). Here the queue's timeout (a policy) is one
    /// second and the database is locked for longer: the broker cancels, the worker consumes
    /// again, and once the lock is gone every command is answered, one customer each, nothing
    /// dead-lettered.
    /// (RabbitMQ 3.10 has no per-queue consumer timeout, only the broker-wide one, which closes
    /// the channel instead; the outage suite covers that.)
    @Test(.enabled(if: TestBroker.isRabbitMQ4, "RabbitMQ 3.10 has no per-queue consumer timeout (its broker-wide one closes the channel)"))
    func aBrokerCancelOnConsumerTimeoutIsFollowedByANewConsumerAndLosesNothing() async throws {
        let fixture = try await WorkerFixture("consumer-timeout", tuning: .init(busyTimeout: .milliseconds(100)))
        let merchant = try await fixture.merchant()
        let names = fixture.configuration.names
        let policy = "\(names.commandQueue).consumer-timeout"
        // The command queue and its shards (fair share).
        let pattern = "^" + NSRegularExpression.escapedPattern(for: names.commandQueue) + "(\\.[0-9]+)?$"
        try await TestBroker.brokerScript(["ctl", "-q", "set_policy", policy, pattern, #"{"consumer-timeout":1000}"#, "--apply-to", "queues"])
        TestResources.onExit("policy \(policy)") { _ = try? await TestBroker.brokerScript(["ctl", "-q", "clear_policy", policy]) }
        let worker = try ObservedWorker(fixture, name: "worker", environment: ["LOG_LEVEL": "info"])
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(60)))

        let release = try await holdSQLiteWriteLock(on: fixture.configuration.databaseURL)
        let commands = (0..<20).map { CommandClient.Command(body: Array(#"{"externalId":"timeout-\#($0)"}"#.utf8), messageID: "timeout-\($0)") }
        try await fixture.client.publish(commands, apiKey: merchant.secretKey, wantReplies: true)
        let cancelled = try await waitFor(timeout: .seconds(60)) {
            (try? String(contentsOfFile: worker.log, encoding: .utf8))?.contains("broker cancelled consumer") == true
        }
        #expect(cancelled, "the broker did not cancel the worker's consumer")
        release()

        let replies = try await fixture.collectReplies(for: Set(commands.map(\.messageID)), timeout: .seconds(60))
        #expect(Set(replies.compactMap(\.properties.correlationID)) == Set(commands.map(\.messageID)))
        #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
        #expect(try await fixture.store.customerCount() == commands.count)
        #expect(try await fixture.drain(names.deadLetterQueue, idle: .milliseconds(300)).isEmpty, "something was dead-lettered")
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(60)), "the worker did not consume again")
        #expect(try await worker.stop() == 0)
        await fixture.tearDown()
    }
}
