import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// A command whose transaction committed is always answered, even at its last delivery: the
/// redelivery replays the stored reply, and a worker that must give it back (shutting down while
/// the database is away) hands it back instead of requeueing it, which would dead-letter it.
@Suite("Worker: a stored command at its last delivery", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct LastDeliveryTests {
    @Test(arguments: StoreKind.all)
    func aCommittedCommandAtItsLastDeliveryIsAnsweredWithItsStoredReply(_ kind: StoreKind) async throws {
        let (fixture, command, first, returnAtTheLimit) = try await committedCommandBeforeItsLastDelivery("last-delivery", kind)
        try await returnAtTheLimit()

        let replies = try await fixture.withWorker { try await fixture.expectAnsweredOnce([command]) }
        let reply = try #require(replies.first)
        #expect(reply.properties.headers["x-replayed"] == .bool(true), "answered from its record")
        #expect(reply.body == first.body, "the stored reply, byte for byte")
        #expect(try await fixture.store.customerCount() == 1)
    }

    /// At its last delivery, the worker holds the command while the database is away and gets
    /// SIGTERM: it hands the command back (a copy, the original acknowledged) instead of requeueing
    /// it, so the broker does not dead-letter it, and the next worker answers it from its record.
    @Test(arguments: StoreKind.all)
    func aCommandAtItsLastDeliveryReturnedAtShutdownIsHandedBackNotDeadLettered(_ kind: StoreKind) async throws {
        let (fixture, command, first, returnAtTheLimit) = try await committedCommandBeforeItsLastDelivery("last-delivery-shutdown", kind)

        // The worker runs, then the database refuses writes, then the command comes to it. Ending
        // the worker's PostgreSQL connections can leave a statement unanswered until
        // answer_timeout (see `quickToGiveUpDatabaseURL`), 10 s here: the wait below is longer.
        let worker = try ObservedWorker(fixture, name: "paused", environment: [
            "DATABASE_URL": fixture.quickToGiveUpDatabaseURL, "DATABASE_BUSY_TIMEOUT_MS": "100", "LOG_LEVEL": "info",
        ])
        TestResources.onExit("paused worker") { await worker.process.terminate() }
        #expect(try await worker.poll("/readyz", until: 200, timeout: .seconds(30)))
        let endOutage = try await fixture.refuseWrites()
        try await returnAtTheLimit()
        do {
            _ = try await worker.pollMetric("customer_worker_store_failures_total", atLeast: 1, timeout: .seconds(30))
        } catch {
            Issue.record("the worker did not pause: \((try? String(contentsOfFile: worker.log, encoding: .utf8))?.suffix(2000) ?? "")")
            throw error
        }
        #expect(await worker.metric("customer_worker_paused") == 1, "paused, holding the command")
        #expect(try await worker.stop() == 0)
        let log = try String(contentsOfFile: worker.log, encoding: .utf8)
        #expect(log.contains("commands handed back to the queue"), "handed back, not requeued: \(log.suffix(800))")
        #expect(!log.contains("returned to the queue"))
        #expect(try await fixture.drain(fixture.configuration.names.deadLetterQueue, idle: .milliseconds(500)).isEmpty, "not dead-lettered")

        try await endOutage()
        let replies = try await fixture.withWorker { try await fixture.expectAnsweredOnce([command]) }
        let reply = try #require(replies.first)
        #expect(reply.properties.headers["x-replayed"] == .bool(true))
        #expect(reply.body == first.body)
        #expect(try await fixture.store.customerCount() == 1)
    }

    /// A fixture whose command was answered (its transaction committed) and published again, that
    /// duplicate held by a test consumer one delivery short of its last; the function returned
    /// gives it back so that its next delivery is its last. Also the command and its first reply.
    private func committedCommandBeforeItsLastDelivery(_ name: String, _ kind: StoreKind) async throws
        -> (WorkerFixture, CommandClient.Command, Delivery, @Sendable () async throws -> Void) {
        let fixture = try await WorkerFixture(name, store: kind)
        let merchant = try await fixture.merchant()
        let (command, first) = try await answerOnce(fixture, apiKey: merchant.secretKey)
        try await fixture.client.publish([command], apiKey: merchant.secretKey, wantReplies: false)
        return (fixture, command, first, try await fixture.holdBeforeLastDelivery(limit: fixture.configuration.deliveryLimit))
    }

    /// Publishes one command, lets a worker answer it (its transaction commits), and returns the
    /// command and its reply.
    private func answerOnce(_ fixture: WorkerFixture, apiKey: String) async throws -> (CommandClient.Command, Delivery) {
        let command = CommandClient.Command(body: Array(#"{"externalId":"last-1","name":"Last"}"#.utf8), messageID: "last-1", correlationID: "last-1")
        let replies = try await fixture.withWorker {
            try await fixture.client.publish([command], apiKey: apiKey, wantReplies: false)
            return try await fixture.expectAnsweredOnce([command])
        }
        let reply = try #require(replies.first)
        #expect(reply.properties.headers["x-replayed"] == .bool(false))
        return (command, reply)
    }
}

extension WorkerFixture {
    /// Rejects (with requeue) the one command in the queue until the broker counted `limit - 1`
    /// earlier deliveries, and keeps that delivery; the function returned rejects it once more
    /// (after cancelling the consumer, so the command waits in the queue): its next delivery is its
    /// last before the queue dead-letters it (RabbitMQ 3.10 dead-letters a message returned with
    /// `x-delivery-count` at the limit; a reject counts on 4.x too).
    func holdBeforeLastDelivery(limit: Int) async throws -> @Sendable () async throws -> Void {
        let session = try await TestBroker.session("reject-until-last")
        try await session.setPrefetch(1)
        try await session.consumeCommandQueues(of: configuration)
        let deadline = ContinuousClock.now + .seconds(30)
        while true {
            try #require(ContinuousClock.now < deadline, "the command did not come back")
            guard let delivery = try await session.nextDeliveries(maximum: 1, wait: .seconds(5)).first else { continue }
            guard (delivery.properties.headers["x-delivery-count"]?.intValue ?? 0) >= limit - 1 else {
                await session.reject(delivery.tag, requeue: true)
                continue
            }
            #expect(try await session.stopConsuming().isEmpty)
            let queue = configuration.names.commandQueue
            return {
                #expect(await session.reject(delivery.tag, requeue: true))
                // A round trip, so the reject is applied before the session closes.
                _ = try await session.messageCount(queue: queue)
                await session.close()
            }
        }
    }

    /// Makes the database refuse writes (SQLite: another connection holds the write lock;
    /// PostgreSQL: the database refuses connections and its open ones are closed) until the
    /// returned function is called or the test ends.
    func refuseWrites() async throws -> @Sendable () async throws -> Void {
        switch kind {
        case .sqlite:
            let release = try await holdSQLiteWriteLock(on: configuration.databaseURL)
            return { release() }
        case .postgres:
            let url = configuration.databaseURL
            try await TestPostgres.setAcceptingConnections(url, false)
            TestResources.onExit("connections to \(url)") { try? await TestPostgres.setAcceptingConnections(url, true) }
            return { try await TestPostgres.setAcceptingConnections(url, true) }
        }
    }
}
