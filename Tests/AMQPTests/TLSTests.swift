import AMQP
import BrokerTestSupport
import Foundation
import Testing

/// amqps:// against the test broker's TLS listener (a certificate for `localhost` from a CA that
/// scripts/broker.sh makes): verified connections work, unverifiable ones fail with `tlsFailed`.
@Suite("AMQP over TLS", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct TLSTests {
    private func tlsConfiguration() async throws -> ConnectionConfiguration {
        let url = try await TestBroker.brokerScript(["tls-url"]).trimmingCharacters(in: .whitespacesAndNewlines)
        return try ConnectionConfiguration(url: url)
    }

    private func connect(_ configuration: ConnectionConfiguration) async throws -> AMQPSession {
        let session = AMQPSession(configuration: configuration, recovery: RecoveryPolicy(maximumAttempts: 1),
                                  logger: TestBroker.logger("tls"), name: "tls")
        TestResources.onExit("AMQP session tls") { await session.close() }
        try await session.connect()
        return session
    }

    @Test func verifiedTLSCarriesMessages() async throws {
        let configuration = try await tlsConfiguration()
        #expect(configuration.tls?.verifyPeer == true && configuration.tls?.verifyHostname == true)
        let session = try await connect(configuration)
        let queue = TestBroker.uniqueName("tls")
        try await session.declare(Topology(queues: [.init(name: queue, autoDelete: true)]))
        try await session.enableConfirms()
        try await session.consume(queue: queue)
        let outcomes = try await session.publish([OutgoingMessage(exchange: "", routingKey: queue, body: Array("secret".utf8))])
        #expect(outcomes == [.confirmed])
        let delivered = try await session.nextDeliveries(maximum: 1, wait: .seconds(5))
        #expect(delivered.first?.body == Array("secret".utf8))
        await session.close()
    }

    /// A batch is written as one buffer (through rabbitmq-c's socket, TLS or not): 600 messages
    /// of 2 KiB are more than the 256 KiB after which the buffer is written early and span many
    /// TLS records. Every one is confirmed and arrives whole, in order.
    @Test(arguments: [true, false])
    func aLargeBatchArrivesWholeAndInOrder(overTLS: Bool) async throws {
        let session = overTLS ? try await connect(try await tlsConfiguration()) : try await TestBroker.session("batch")
        let queue = TestBroker.uniqueName("batch")
        try await session.declare(Topology(queues: [.init(name: queue, autoDelete: true)]))
        try await session.enableConfirms()
        try await session.consume(queue: queue)
        let bodies = (0..<600).map { index in Array("\(index):".utf8) + Array(repeating: UInt8(index % 251), count: 2048) }
        let outcomes = try await session.publish(bodies.enumerated().map { index, body in
            OutgoingMessage(exchange: "", routingKey: queue, body: body, properties: MessageProperties(messageID: "\(index)"))
        })
        #expect(outcomes == Array(repeating: .confirmed, count: bodies.count))
        var delivered: [Delivery] = []
        let deadline = ContinuousClock.now + .seconds(20)
        while delivered.count < bodies.count, ContinuousClock.now < deadline {
            delivered += try await session.nextDeliveries(maximum: 256, wait: .milliseconds(500))
        }
        #expect(delivered.map(\.body) == bodies)
        #expect(delivered.map(\.properties.messageID) == bodies.indices.map { "\($0)" })
    }

    @Test func aCertificateFromAnUnknownCAIsRefused() async throws {
        var configuration = try await tlsConfiguration()
        configuration.tls?.caFile = nil  // the system's CAs do not know the test CA
        await #expect {
            try await connect(configuration)
        } throws: { error in
            if case AMQPError.tlsFailed = error { true } else { false }
        }
    }

    @Test func aCertificateForAnotherHostIsRefused() async throws {
        var configuration = try await tlsConfiguration()
        configuration.host = "127.0.0.1"  // the certificate names localhost only
        await #expect {
            try await connect(configuration)
        } throws: { error in
            if case AMQPError.tlsFailed = error { true } else { false }
        }
    }
}
