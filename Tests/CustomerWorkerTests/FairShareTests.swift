import AMQP
import BrokerTestSupport
import CreateCustomer
@testable import CustomerWorker
import Foundation
import Testing

/// `FairShare`'s names, lanes and topology, without a broker.
@Suite("Fair share (no servers)", .closesResources)
struct FairShareRulesTests {
    let names = TopologyNames(prefix: "t")

    @Test func shardsAreNamedAfterTheCommandQueueAndConsumedBeforeIt() {
        let fair = FairShare(shards: 3, names: names)
        #expect(fair.shardQueues == ["t.create.0", "t.create.1", "t.create.2"])
        #expect(fair.consumedQueues == ["t.create.0", "t.create.1", "t.create.2", "t.create"])
        #expect(fair.exchange == "t.commands.fair")
    }

    @Test func lanesAreShardIndicesOrUnshardedAndNothingElse() {
        let fair = FairShare(shards: 3, names: names)
        #expect(fair.lane(ofQueue: "t.create.2") == "2")
        #expect(fair.lane(ofQueue: "t.create") == "unsharded")
        #expect(fair.lane(ofQueue: "t.create.3") == "unsharded")
        #expect(fair.lane(ofQueue: "t.create.01") == "unsharded")
        #expect(fair.lane(ofQueue: "t.create.dead") == "unsharded")
        #expect(fair.lane(ofQueue: nil) == "unsharded")
        #expect(fair.lanes == ["0", "1", "2", "unsharded"])
    }

    @Test func onTheCommandExchangeFeedsTheHashExchangeAndNoLongerTheCommandQueue() {
        var configuration = WorkerConfiguration()
        configuration.names = names
        configuration.fairShareShards = 2
        let topology = configuration.topology
        let hash = topology.exchanges.first { $0.name == "t.commands.fair" }
        #expect(hash?.type == "x-consistent-hash")
        #expect(hash?.arguments["hash-header"] == .string("x-api-key"))
        #expect(topology.exchangeBindings == [.init(destination: "t.commands.fair", source: "t.commands", routingKey: "customer.create")])
        #expect(topology.removedBindings == [.init(queue: "t.create", exchange: "t.commands", routingKey: "customer.create")])
        #expect(!topology.bindings.contains { $0.queue == "t.create" })
        for shard in ["t.create.0", "t.create.1"] {
            let queue = topology.queues.first { $0.name == shard }
            #expect(queue?.arguments["x-queue-type"] == "quorum")
            #expect(queue?.arguments["x-delivery-limit"] == .int(Int64(configuration.deliveryLimit)))
            #expect(queue?.arguments["x-dead-letter-exchange"] == .string("t.dead-letter"))
            #expect(topology.bindings.contains(.init(queue: shard, exchange: "t.commands.fair", routingKey: "1")))
        }
        #expect(configuration.commandQueues == ["t.create.0", "t.create.1", "t.create"])
        #expect(configuration.replyTo.ownQueues.isSuperset(of: ["t.create.0", "t.create.1", "t.create"]))
    }

    @Test func offTheCommandQueueIsBoundAsBeforeAndTheHashPathIsRemoved() {
        var configuration = WorkerConfiguration()
        configuration.names = names
        configuration.fairShareShards = 0
        let topology = configuration.topology
        #expect(topology.bindings.contains(.init(queue: "t.create", exchange: "t.commands", routingKey: "customer.create")))
        #expect(topology.exchangeBindings.isEmpty)
        #expect(topology.removedExchangeBindings == [.init(destination: "t.commands.fair", source: "t.commands", routingKey: "customer.create")])
        #expect(!topology.exchanges.contains { $0.type == "x-consistent-hash" })
        #expect(configuration.commandQueues == ["t.create"])
    }

    @Test func itIsOnByDefaultWithEightShards() {
        let configuration = WorkerConfiguration()
        #expect(configuration.fairShareShards == 8)
        #expect(configuration.commandQueues.count == 9, "eight shards and the command queue")
    }

    /// What a 3.10 broker without the plugin closed the connection with (seen on scripts/broker.sh's
    /// node after `rabbitmq-plugins disable rabbitmq_consistent_hash_exchange`).
    @Test func aBrokerWithoutThePluginIsReportedAsWhatToDo() throws {
        let closed = AMQPError.connectionClosedByBroker(code: 503, text: "COMMAND_INVALID - invalid exchange type 'x-consistent-hash'")
        let missing = try #require(FairShare.PluginMissing(underlying: closed))
        #expect(missing.description.contains("rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"))
        #expect(missing.description.contains("FAIR_SHARE_SHARDS=0"))
        let otherType = AMQPError.connectionClosedByBroker(code: 503, text: "COMMAND_INVALID - invalid exchange type 'x-foo'")
        #expect(FairShare.PluginMissing(underlying: otherType) == nil)
        #expect(FairShare.PluginMissing(underlying: .connectionLost(operation: "declare", reason: "reset")) == nil)
    }
}

/// A heavy merchant's backlog does not hold a light merchant's commands back: ordering, not
/// timing, on a real broker and database.
@Suite("Fair share per merchant", .serialized, .closesResources)
struct FairShareTests {
    static let heavyCount = 2000
    static let lightCount = 20

    /// The heavy merchant's backlog is queued first, then the light merchant's commands, with no
    /// worker running; a worker then starts. Without fair share every light command would be
    /// answered after the whole backlog; with it, each is answered in the first prefetch windows.
    @Test(arguments: [StoreKind.sqlite, .postgres])
    func aLightMerchantIsAnsweredWhileAHeavyMerchantsBacklogDrains(_ kind: StoreKind) async throws {
        let fixture = try await WorkerFixture("fair-share", tuning: .init(fairShareShards: 8), store: kind)
        // The fixture's client declared the topology, so the probes below are routed.
        let heavy = try await fixture.merchant()
        let shardOfHeavy = try await fixture.shardOf(apiKey: heavy.secretKey, probe: "probe-heavy")
        // A light merchant in another shard (two merchants share one with a chance of 1 in 8).
        var light: MerchantCredentials?
        for attempt in 0..<6 where light == nil {
            let candidate = try await fixture.merchant()
            if try await fixture.shardOf(apiKey: candidate.secretKey, probe: "probe-light-\(attempt)") != shardOfHeavy { light = candidate }
        }
        let lightMerchant = try #require(light, "six merchants in a row shared the heavy merchant's shard")

        let heavyIDs = (0..<Self.heavyCount).map { "heavy-\($0)" }
        for chunk in stride(from: 0, to: heavyIDs.count, by: 500) {
            try await fixture.publishRaw(heavyIDs[chunk..<min(chunk + 500, heavyIDs.count)].map { (body: #"{"externalId":"\#($0)"}"#, messageID: $0, replyTo: nil as String?) },
                                         apiKey: heavy.secretKey)
        }
        let lightIDs = (0..<Self.lightCount).map { "light-\($0)" }
        try await fixture.publishRaw(lightIDs.map { (body: #"{"externalId":"\#($0)"}"#, messageID: $0, replyTo: nil as String?) }, apiKey: lightMerchant.secretKey)

        let replies = try await fixture.withWorker {
            try await fixture.waitForReplies(Set(heavyIDs + lightIDs), timeout: .seconds(120))
        }
        let order = replies.compactMap(\.properties.correlationID).filter { $0.hasPrefix("heavy-") || $0.hasPrefix("light-") }
        #expect(Set(order) == Set(heavyIDs + lightIDs), "every command answered")
        #expect(order.count == heavyIDs.count + lightIDs.count, "none answered twice")
        let lastLight = try #require(order.lastIndex { $0.hasPrefix("light-") })
        let heavyBefore = order[..<lastLight].filter { $0.hasPrefix("heavy-") }.count
        // One prefetch window (256) of the heavy merchant's, and the batches in flight, at most.
        #expect(heavyBefore < Self.heavyCount / 4,
                "the last light reply came after \(heavyBefore) of \(Self.heavyCount) heavy replies")
        await fixture.tearDown()
    }
}

extension WorkerFixture {
    /// The shard `apiKey`'s commands land in: publishes one probe command (answered later, like
    /// any other) and finds the shard whose count grew. Needs no worker consuming.
    func shardOf(apiKey: String, probe: String) async throws -> String {
        let shards = configuration.fairShare.shardQueues
        var before: [String: Int] = [:]
        for shard in shards { before[shard] = try await messageCount(shard) }
        try await publishRaw([(#"{"externalId":"\#(probe)"}"#, probe, nil)], apiKey: apiKey)
        for shard in shards where try await messageCount(shard) > before[shard] ?? 0 { return shard }
        throw ShardNotFound(probe: probe)
    }

    struct ShardNotFound: Error, CustomStringConvertible {
        let probe: String
        var description: String { "probe \(probe) reached no shard" }
    }
}
