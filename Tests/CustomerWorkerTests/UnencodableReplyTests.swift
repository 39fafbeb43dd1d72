import AMQP
import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// A command whose reply cannot carry one of its properties is answered without it; the others
/// are not delayed, the connection is not lost, nothing is dead-lettered.
@Suite("Worker: a property the reply cannot carry", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct UnencodableReplyTests {
    @Test func aCorrelationIDOfRawBytesIsDroppedAndEveryCommandAnsweredOnce() async throws {
        let fixture = try await WorkerFixture("unencodable-reply")
        do {
            let merchant = try await fixture.merchant()
            let names = fixture.configuration.names
            let good = (0..<100).map { CommandClient.Command(body: Array(#"{"externalId":"raw-\#($0)"}"#.utf8), messageID: "raw-\($0)",
                                                             correlationID: "raw-\($0)") }
            try await fixture.client.publish(Array(good[..<50]), apiKey: merchant.secretKey, wantReplies: false)
            // 100 bytes of 0xFF: a valid short string, but not UTF-8; decoded, it grows to 300 bytes.
            try RawCommandPublisher.publish(exchange: names.commandExchange, routingKey: names.commandRoutingKey,
                                            body: Array(#"{"externalId":"raw-bad"}"#.utf8), apiKey: merchant.secretKey,
                                            messageID: "raw-bad", correlationID: Array(repeating: 0xFF, count: 100))
            try await fixture.client.publish(Array(good[50...]), apiKey: merchant.secretKey, wantReplies: false)

            let worker = try ObservedWorker(fixture, name: "worker")
            do {
                let expected = Set(good.map(\.messageID) + ["raw-bad"])
                var replies: [Delivery] = []
                let deadline = ContinuousClock.now + .seconds(20)
                while !expected.isSubset(of: Set(replies.compactMap(\.properties.correlationID))), ContinuousClock.now < deadline {
                    replies += try await fixture.drain(names.repliesQueue, idle: .milliseconds(300))
                }
                replies += try await fixture.drain(names.repliesQueue, idle: .seconds(1))  // duplicates would come now
                let answered = replies.compactMap(\.properties.correlationID)
                #expect(Set(answered) == expected, "every command answered (the bad one under its message_id)")
                #expect(answered.count == expected.count, "each once")
                #expect(replies.allSatisfy { $0.properties.type == "CustomerCreated" })
                #expect(try await fixture.drain(names.deadLetterQueue).isEmpty, "nothing dead-lettered")
                #expect(await worker.metric("customer_worker_reconnects_total") == 0, "no reconnect")
                #expect(try await worker.stop() == 0)
                let log = try String(contentsOfFile: worker.log, encoding: .utf8)
                #expect(!log.contains("AMQP connection lost"))
                #expect(try await fixture.store.customerCount() == 101)
            } catch {
                await worker.process.terminate()
                throw error
            }
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }
}
