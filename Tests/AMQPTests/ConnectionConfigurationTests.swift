import AMQP
import BrokerTestSupport
import Testing

@Suite("AMQP URLs", .closesResources)
struct ConnectionConfigurationTests {
    @Test func parsesAFullURL() throws {
        let configuration = try ConnectionConfiguration(url: "amqp://alice:s%40cret@broker.example:5673/orders?heartbeat=5&connection_timeout=2500")
        #expect(configuration.host == "broker.example")
        #expect(configuration.port == 5673)
        #expect(configuration.user == "alice")
        #expect(configuration.password == "s@cret")
        #expect(configuration.vhost == "orders")
        #expect(configuration.tls == nil)
        #expect(configuration.heartbeat == .seconds(5))
        #expect(configuration.connectTimeout == .milliseconds(2500))
    }

    @Test func decodesTheDefaultVhost() throws {
        #expect(try ConnectionConfiguration(url: "amqp://guest:guest@127.0.0.1:5672/%2f").vhost == "/")
        #expect(try ConnectionConfiguration(url: "amqp://localhost").vhost == "/")
        #expect(try ConnectionConfiguration(url: "amqp://localhost").port == 5672)
    }

    @Test func amqpsTurnsOnVerifiedTLS() throws {
        let configuration = try ConnectionConfiguration(url: "amqps://u:p@host/vh?cacertfile=/etc/ca.pem")
        let tls = try #require(configuration.tls)
        #expect(configuration.port == 5671)
        #expect(tls.caFile == "/etc/ca.pem")
        #expect(tls.verifyPeer && tls.verifyHostname)
        let unverified = try ConnectionConfiguration(url: "amqps://host?verify=verify_none")
        #expect(unverified.tls?.verifyPeer == false)
    }

    @Test(arguments: [
        ("http://host", "scheme"),
        ("amqp://host:notaport", "expected amqp"),
        ("amqp://host?heartbeat=-1", "heartbeat"),
        ("amqp://host?frobnicate=1", "unknown query parameter 'frobnicate'"),
        ("amqp://host?cacertfile=/x", "needs an amqps:// URL"),
    ])
    func rejectsBadURLs(url: String, reason: String) {
        #expect {
            try ConnectionConfiguration(url: url)
        } throws: { error in
            guard case AMQPError.invalidURL(_, let message) = error else { return false }
            return message.contains(reason)
        }
    }

    @Test func redactsPasswordsInMessages() {
        #expect(AMQPError.redacted("amqp://user:topsecret@host:5672/%2f") == "amqp://user:***@host:5672/%2f")
        let error = AMQPError.invalidURL(url: "amqp://user:topsecret@host:x", reason: "bad")
        #expect(!error.description.contains("topsecret"))
    }

    @Test func backoffGrowsAndIsCapped() {
        let policy = RecoveryPolicy(initialDelay: .milliseconds(100), maximumDelay: .seconds(2), multiplier: 2)
        for _ in 0..<50 {
            let first = policy.delay(beforeAttempt: 1)
            #expect(first >= .milliseconds(50) && first <= .milliseconds(100))
            let late = policy.delay(beforeAttempt: 20)
            #expect(late >= .seconds(1) && late <= .seconds(2))
            let veryLate = policy.delay(beforeAttempt: 10_000)
            #expect(veryLate >= .seconds(1) && veryLate <= .seconds(2))
        }
    }
}

@Suite("AMQP URL lists", .closesResources)
struct ConnectionListTests {
    @Test func aCommaSeparatedListIsOneNodeEach() throws {
        let nodes = try ConnectionConfiguration.list("amqp://a:pa@h1:5710/%2f, amqps://b:pb@h2:5711/v?heartbeat=5,amqp://h3")
        #expect(nodes.map(\.endpoint) == ["h1:5710", "h2:5711", "h3:5672"])
        #expect(nodes[1].tls != nil && nodes[1].heartbeat == .seconds(5) && nodes[1].user == "b")
        #expect(throws: AMQPError.self) { try ConnectionConfiguration.list(" , ") }
        #expect(throws: AMQPError.self) { try ConnectionConfiguration.list("amqp://h1,http://h2") }
    }

    @Test func passwordsNeverShow() throws {
        let list = "amqp://a:secret1@h1:5710/%2f,amqp://b:secret2@h2:5711/%2f"
        #expect(AMQPError.redacted(list) == "amqp://a:***@h1:5710/%2f,amqp://b:***@h2:5711/%2f")
        let node = try #require(try ConnectionConfiguration.list(list).last)
        #expect("\(node)" == "amqp://b:***@h2:5711/%2F")
        #expect(!String(reflecting: node).contains("secret2"))
    }
}
