import Synchronization
@testable import CreateCustomer
import CustomerDomain
import Foundation
import Testing

/// The create-customer core driven by hand: no database, every read and write visible.
@Suite("Create-customer core (no database)")
struct CreateCustomerCoreTests {
    static let now = Timestamp(Date(timeIntervalSince1970: 1_747_728_000.125))
    static let merchant = "mer_1"
    static let secret = APIKeys.generate(.secret, merchantID: merchant)
    static let publishable = APIKeys.generate(.publishable, merchantID: merchant)
    static let free = Plan(id: "free", name: "Free", price: 0, billingCadence: .monthly)

    static func command(_ json: String, key: String? = secret.key) -> IncomingCommand {
        IncomingCommand(apiKey: key, contentType: "application/json", body: Array(json.utf8))
    }

    /// Runs the core to the end: feeds `records`, `plans` and `customers` for every read, and
    /// inserts every creation unless `lose` names its external id. Returns the outcomes, the
    /// reads asked for and the writes.
    static func run(_ commands: [IncomingCommand], records: [ProcessedRequest] = [], plans: [String: Plan] = [merchant: free],
                    keys: [StoredAPIKey] = [secret.stored, publishable.stored], lose: Set<String> = [],
                    existing: [CustomerReference: String] = [:], ids: @escaping IdentifierSource = { newIdentifier(now: $0) })
        -> (outcomes: [CommandOutcome], reads: [CreateCustomerCore.Read], writes: [CreateCustomerCore.Writes]) {
        var core = CreateCustomerCore(commands: commands, now: now, ids: ids)
        var reads: [CreateCustomerCore.Read] = []
        var writes: [CreateCustomerCore.Writes] = []
        var action = core.start()
        while true {
            switch action {
            case .read(let read):
                reads.append(read)
                switch read {
                case .apiKeys(let ids): action = core.fed(.apiKeys(keys.filter { ids.contains($0.id) }))
                case .processedRequests(let wanted): action = core.fed(.processedRequests(records.filter { wanted.map(\.idempotencyKey).contains($0.idempotencyKey) }))
                case .defaultPlans(let merchants): action = core.fed(.defaultPlans(plans.filter { merchants.contains($0.key) }))
                case .customerIDs(let references): action = core.fed(.customerIDs(existing.filter { references.contains($0.key) }))
                }
            case .write(let write):
                writes.append(write)
                let inserted = write.creations.filter { !lose.contains($0.customer.attributes.externalId) }.map(\.customer.id)
                action = core.wrote(inserted: Set(inserted))
            case .done(let outcomes):
                return (outcomes, reads, writes)
            }
        }
    }

    /// Ids come from the source the core is given: the same commands, the same rows and replies.
    @Test func idsAreInjectedSoTheCoreIsDeterministic() throws {
        let commands = [Self.command(#"{"externalId":"cus_1"}"#), Self.command(#"{"externalId":"cus_2"}"#)]
        func sequential() -> IdentifierSource {
            let next = Mutex(0)
            return { _ in next.withLock { $0 += 1; return "id-\($0)" } }
        }
        let first = Self.run(commands, ids: sequential())
        let second = Self.run(commands, ids: sequential())
        #expect(first.writes.flatMap { $0.creations.map(\.customer.id) } == ["id-1", "id-3"], "a customer, then its subscription")
        #expect(first.outcomes.map(\.reply?.body) == second.outcomes.map(\.reply?.body))
    }

    @Test func aNewCommandReadsKeysRecordsAndPlansThenWritesItsRows() throws {
        let (outcomes, reads, writes) = Self.run([Self.command(#"{"externalId":"cus_1"}"#)])
        let reply = try #require(outcomes.first?.reply)
        #expect(reply.type == .customerCreated && !reply.replayed)
        #expect(reads.count == 3)
        guard case .apiKeys(let ids) = reads[0], case .processedRequests(let keys) = reads[1], case .defaultPlans(let merchants) = reads[2]
        else { Issue.record("reads: \(reads)"); return }
        #expect(ids == [Self.secret.stored.id])
        #expect(keys == [RecordLookup(idempotencyKey: try #require(reply.idempotencyKey),
                                      customer: CustomerReference(merchantID: Self.merchant, externalID: "cus_1"))])
        #expect(merchants == [Self.merchant])
        let creation = try #require(writes.first?.creations.first)
        #expect(writes.count == 1 && writes[0].creations.count == 1)
        #expect(creation.subscription?.planId == "free")
        #expect(creation.record.replyBody == reply.body)
        #expect(writes[0].recordedAt == Self.now)
    }

    @Test func withoutAKeyNothingIsRead() {
        let (outcomes, reads, writes) = Self.run([Self.command(#"{"externalId":"cus_1"}"#, key: nil)])
        #expect(outcomes.first?.reply?.errorCode == "unauthorized")
        #expect(reads.isEmpty && writes.isEmpty)
    }

    @Test func aPublishableOrRevokedOrUnknownKeyIsRefused() {
        var revoked = Self.secret.stored
        revoked.isRevoked = true
        #expect(Self.run([Self.command(#"{"externalId":"cus_1"}"#, key: Self.publishable.key)]).outcomes.first?.reply?.errorCode == "forbidden")
        let (outcomes, _, writes) = Self.run([Self.command(#"{"externalId":"cus_1"}"#)], keys: [revoked])
        #expect(outcomes.first?.reply?.errorCode == "unauthorized")
        #expect(writes.isEmpty)
        let unknown = Self.run([Self.command(#"{"externalId":"cus_1"}"#)], keys: [])
        #expect(unknown.outcomes.first?.reply?.errorCode == "unauthorized")
    }

    @Test func anInvalidCommandFailsWithoutReadingRecords() {
        let (outcomes, reads, writes) = Self.run([Self.command(#"{"externalId":""}"#)])
        #expect(outcomes.first?.reply?.type == .customerCreateFailed)
        #expect(reads.count == 1, "only the key")
        #expect(writes.isEmpty)
    }

    @Test func theSameCommandAgainReplaysTheStoredReply() throws {
        let first = Self.run([Self.command(#"{"externalId":"cus_1"}"#)])
        let record = try #require(first.writes.first?.creations.first?.record)
        let again = Self.run([Self.command(#"{"externalId":"cus_1"}"#)], records: [record])
        let reply = try #require(again.outcomes.first?.reply)
        #expect(reply.replayed)
        #expect(reply.body == first.outcomes.first?.reply?.body)
        #expect(again.writes.isEmpty)
    }

    @Test func aDifferentCommandWithTheSameExternalIDIsAConflict() throws {
        let first = Self.run([Self.command(#"{"externalId":"cus_1"}"#)])
        let record = try #require(first.writes.first?.creations.first?.record)
        let changed = Self.run([Self.command(#"{"externalId":"cus_1","name":"Ada"}"#)], records: [record])
        #expect(changed.outcomes.first?.reply?.errorCode == "external_id_conflict")
        #expect(changed.writes.isEmpty)
    }

    @Test func aDuplicateInsideTheBatchIsCreatedOnceAndReplayed() {
        let (outcomes, _, writes) = Self.run([Self.command(#"{"externalId":"cus_1"}"#), Self.command(#"{"externalId":"cus_1"}"#)])
        #expect(writes.first?.creations.count == 1)
        #expect(outcomes[0].reply?.replayed == false)
        #expect(outcomes[1].reply?.replayed == true)
        #expect(outcomes[0].reply?.body == outcomes[1].reply?.body)
    }

    @Test func writesAreSortedByIdempotencyKey() {
        let commands = (0..<20).map { Self.command(#"{"externalId":"cus_\#($0)"}"#) }
        let keys = Self.run(commands).writes.first?.creations.map(\.record.idempotencyKey) ?? []
        #expect(keys.count == 20 && keys == keys.sorted())
    }

    /// Every read names each key id, record and merchant once, sorted, whatever the batch's order:
    /// two merchants' commands interleaved, each command twice.
    @Test func readsAreSortedAndNameEachValueOnce() throws {
        let other = APIKeys.generate(.secret, merchantID: "mer_0")
        let commands = (0..<12).flatMap { index in
            let command = Self.command(#"{"externalId":"cus_\#(index / 2)"}"#, key: index.isMultiple(of: 2) ? Self.secret.key : other.key)
            return [command, command]
        }
        let (outcomes, reads, writes) = Self.run(
            commands, plans: [Self.merchant: Self.free, "mer_0": Self.free], keys: [Self.secret.stored, other.stored])
        guard reads.count == 3, case .apiKeys(let keyIDs) = reads[0], case .processedRequests(let lookups) = reads[1],
              case .defaultPlans(let merchants) = reads[2]
        else { Issue.record("unexpected reads \(reads)"); return }
        #expect(keyIDs == [Self.secret.stored.id, other.stored.id].sorted())
        #expect(merchants == ["mer_0", Self.merchant])
        let keys = lookups.map(\.idempotencyKey)
        #expect(keys.count == 12 && keys == keys.sorted() && Set(keys).count == 12, "6 external ids, each under 2 merchants")
        for lookup in lookups {
            #expect(lookup.idempotencyKey == idempotencyKey(merchantID: lookup.customer.merchantID, externalID: lookup.customer.externalID))
        }
        #expect(writes.first?.creations.map(\.record.idempotencyKey) == keys, "one creation per key, in key order")
        #expect(outcomes.compactMap(\.reply).filter(\.replayed).count == 12, "each command's twin replays it")
    }

    @Test func sortingByKeyKeepsTheOrderOfEqualKeysAndDistinctKeepsTheFirst() {
        let values = [("b", 0), ("a", 1), ("b", 2), ("c", 3), ("a", 4)]
        #expect(values.sorted(byKey: \.0).map(\.1) == [1, 4, 0, 2, 3])
        #expect(values.sorted(byKey: \.0, distinct: true).map(\.1) == [1, 0, 3])
        // Keys alike in their first 8 bytes, one a prefix of another: ordered by the whole key.
        let long = [("abcdefghZ", 0), ("abcdefgh", 1), ("abcdefghA", 2), ("abcdefghA", 3), ("abcdefg", 4), ("b", 5)]
        #expect(long.sorted(byKey: \.0).map(\.1) == [4, 1, 2, 3, 0, 5])
        #expect(long.sorted(byKey: \.0, distinct: true).map(\.1) == [4, 1, 2, 0, 5])
        #expect(distinctSorted(["m2", "m2", "m1", "m2", "m1"]) == ["m1", "m2"])
        #expect(distinctSorted(["m1", "m1"]) == ["m1"])
        #expect(distinctSorted([String]()).isEmpty)
    }

    @Test func aLostRaceReplaysTheWinnersRecord() throws {
        let winner = Self.run([Self.command(#"{"externalId":"cus_1"}"#)])
        let record = try #require(winner.writes.first?.creations.first?.record)
        // The record is not there when this batch reads, and is there after its insert lost.
        var core = CreateCustomerCore(commands: [Self.command(#"{"externalId":"cus_1"}"#)], now: Self.now)
        guard case .read(.apiKeys) = core.start(),
              case .read(.processedRequests) = core.fed(.apiKeys([Self.secret.stored])),
              case .read(.defaultPlans) = core.fed(.processedRequests([])),
              case .write = core.fed(.defaultPlans([Self.merchant: Self.free])),
              case .read(.processedRequests(let lost)) = core.wrote(inserted: []),
              case .done(let outcomes) = core.fed(.processedRequests([record]))
        else { Issue.record("unexpected step"); return }
        #expect(lost.map(\.idempotencyKey) == [record.idempotencyKey])
        #expect(lost.map(\.customer) == [CustomerReference(merchantID: Self.merchant, externalID: "cus_1")])
        #expect(outcomes.first?.reply?.replayed == true)
    }

    @Test func aCustomerWithoutARecordIsAConflictNamingIt() {
        let reference = CustomerReference(merchantID: Self.merchant, externalID: "cus_1")
        let (outcomes, reads, _) = Self.run([Self.command(#"{"externalId":"cus_1"}"#)], lose: ["cus_1"], existing: [reference: "cus_existing"])
        #expect(outcomes.first?.reply?.errorCode == "external_id_conflict")
        let body = String(decoding: outcomes.first?.reply?.body ?? [], as: UTF8.self)
        #expect(body.contains("cus_existing"))
        #expect(reads.last == .customerIDs([reference]))
    }

    @Test func anArchivedDefaultPlanGivesNoSubscription() {
        var archived = Self.free
        archived.status = .archived
        let (outcomes, _, writes) = Self.run([Self.command(#"{"externalId":"cus_1"}"#)], plans: [Self.merchant: archived])
        #expect(outcomes.first?.reply?.type == .customerCreated)
        #expect(writes.first?.creations.first?.subscription == nil, "the rules, not the adapter, decide availability")
    }

    @Test func aStoredPlanOutOfRangeFailsThatCommandAloneAndTheOthersGoOn() {
        var broken = Self.free
        broken.trialDays = Int.max
        broken.price = 900
        let other = "mer_2"
        let otherKey = APIKeys.generate(.secret, merchantID: other)
        let (outcomes, _, writes) = Self.run(
            [Self.command(#"{"externalId":"cus_1"}"#), Self.command(#"{"externalId":"cus_2"}"#, key: otherKey.key)],
            plans: [Self.merchant: broken, other: Self.free], keys: [Self.secret.stored, otherKey.stored])
        guard case .failed(let reason) = outcomes[0] else { Issue.record("\(outcomes[0])"); return }
        #expect(reason.contains("trialDays"))
        #expect(outcomes[1].reply?.type == .customerCreated)
        #expect(writes.first?.creations.count == 1)
    }

    @Test func startingAgainStartsAfresh() {
        var core = CreateCustomerCore(commands: [Self.command(#"{"externalId":"cus_1"}"#)], now: Self.now)
        _ = core.start()
        _ = core.fed(.apiKeys([Self.secret.stored]))
        guard case .read(.apiKeys) = core.start() else { Issue.record("not afresh"); return }
    }
}
