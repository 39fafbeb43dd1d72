import AMQP
import BrokerTestSupport
import Foundation
import Testing

/// A message the client cannot encode fails alone: the connection stays up, the others go on.
@Suite("AMQP: a message that cannot be encoded", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct UnencodableTests {
    @Test func aPropertyTooLongFailsThatPublishOnly() async throws {
        let session = try await TestBroker.session("unencodable")
        do {
            let queue = TestBroker.uniqueName("unencodable")
            try await session.declare(Topology(queues: [.init(name: queue, autoDelete: true)]))
            try await session.enableConfirms()
            let generation = await session.generation
            func message(_ id: String, correlationID: String? = nil, routingKey: String? = nil) -> OutgoingMessage {
                OutgoingMessage(exchange: "", routingKey: routingKey ?? queue, body: Array(id.utf8),
                                properties: MessageProperties(correlationID: correlationID, messageID: id))
            }
            let outcomes = try await session.publish([
                message("good-1"), message("bad-correlation", correlationID: String(repeating: "\u{FFFD}", count: 100)),
                message("good-2"), message("bad-routing-key", routingKey: String(repeating: "q", count: 256)), message("good-3"),
            ])
            #expect(outcomes[0] == .confirmed && outcomes[2] == .confirmed && outcomes[4] == .confirmed)
            #expect(outcomes[1] == .unencodable(reason: "the correlation_id property is 300 bytes long (at most 255)"))
            #expect(outcomes[3] == .unencodable(reason: "the routing key is 256 bytes long (at most 255)"))
            #expect(try await session.publish([message("good-4")]) == [.confirmed])
            #expect(await session.generation == generation, "no reconnect")

            try await session.consume(queue: queue)
            var ids: [String] = []
            let deadline = ContinuousClock.now + .seconds(10)
            while ids.count < 4, ContinuousClock.now < deadline {
                ids += try await session.nextDeliveries(maximum: 10, wait: .milliseconds(500)).compactMap(\.properties.messageID)
            }
            #expect(ids == ["good-1", "good-2", "good-3", "good-4"])
        } catch {
            await session.close()
            throw error
        }
        await session.close()
    }
}
