import CustomerDomain
import BrokerTestSupport
import CreateCustomer
@testable import CustomerStore
import Foundation
import GRDB
import Testing

@Suite("Store: idempotency", .closesResources)
struct StoreIdempotencyTests {
    static let ada = #"{"externalId":"cus_1","name":"Ada","billingCountry":"us","billingState":"ca"}"#

    @Test(arguments: StoreKind.all)
    func sameCommandTwiceCreatesOneCustomerAndReplaysTheBytes(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let first = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            let second = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            #expect(first.type == .customerCreated)
            #expect(!first.replayed)
            #expect(second.replayed)
            #expect(second.body == first.body)
            #expect(second.messageID == first.messageID)
            #expect(second.idempotencyKey == first.idempotencyKey)
            #expect(first.errorCode == nil)
            #expect(try await store.customerCount() == 1)
            let reply = try decodeCreated(first)
            #expect(reply.idempotencyKey == idempotencyKey(merchantID: merchant.id, externalID: "cus_1"))
            #expect(first.messageID == ReplyMessageID.created(idempotencyKey: reply.idempotencyKey))
            #expect(reply.customer.merchantId == merchant.id)
            #expect(reply.customer.attributes.billingState == "CA")
            #expect(reply.customer.createdAt == Timestamp(now))
            #expect(reply.defaultPlan.outcome == .noDefaultPlan)
        }
    }

    /// The record holds the reply in its compact form (`StoredReplyBody`), and a record stored
    /// as the reply itself (every record written before that form) still replays byte for byte.
    @Test(arguments: StoreKind.all)
    func theReplyIsStoredCompactlyAndARecordOfTheOldFormStillReplays(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let first = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            let hex = kind == .sqlite ? "hex(stored_reply)" : "upper(encode(stored_reply, 'hex'))"
            let stored = try #require(try await store.strings("SELECT \(hex) FROM processed_requests").first?.first ?? nil)
            #expect(stored.hasPrefix("0001"), "the compact form, version 1")
            #expect(stored.count / 2 < first.body.count * 2 / 3, "\(stored.count / 2) bytes stored for a reply of \(first.body.count)")
            #expect(try StoredReplyBody.decode(hexBytes(stored)) == first.body)

            let reply = first.body.map { String(format: "%02X", $0) }.joined()
            try await store.execute(kind == .sqlite ? "UPDATE processed_requests SET stored_reply = X'\(reply)'"
                                                    : "UPDATE processed_requests SET stored_reply = decode('\(reply)', 'hex')")
            let replay = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            #expect(replay.replayed)
            #expect(replay.body == first.body)
        }
    }

    private func hexBytes(_ hex: String) -> [UInt8] {
        var bytes: [UInt8] = []
        var index = hex.startIndex
        while index < hex.endIndex {
            let next = hex.index(index, offsetBy: 2)
            bytes.append(UInt8(hex[index..<next], radix: 16)!)
            index = next
        }
        return bytes
    }

    @Test(arguments: StoreKind.all)
    func reorderedOrNullEquivalentCommandIsTheSameCommand(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let first = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            let same = #"{"billingState":"CA","name":"Ada","email":null,"billingCountry":"US","externalId":"cus_1"}"#
            let second = try await store.handleOne(command(same, key: merchant.secretKey))
            #expect(second.replayed)
            #expect(second.body == first.body)
        }
    }

    @Test(arguments: StoreKind.all)
    func differentPayloadIsAConflictThatIsNotRecorded(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let created = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            let changed = #"{"externalId":"cus_1","name":"Ada Lovelace"}"#
            let conflict = try await store.handleOne(command(changed, key: merchant.secretKey))
            #expect(conflict.type == .customerCreateFailed)
            #expect(conflict.errorCode == "external_id_conflict")
            #expect(!conflict.replayed)
            let failure = try decodeFailed(conflict)
            #expect(failure.error.existingCustomerId == (try decodeCreated(created)).customer.id)
            #expect(failure.idempotencyKey == created.idempotencyKey)
            #expect(conflict.messageID != created.messageID)
            // The original still replays.
            let again = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            #expect(again.replayed && again.body == created.body)
            #expect(try await store.customerCount() == 1)
        }
    }

    @Test(arguments: StoreKind.all)
    func externalIdIsCaseSensitive(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let replies = try await store.handleRecording([
                command(#"{"externalId":"abc"}"#, key: merchant.secretKey),
                command(#"{"externalId":"ABC"}"#, key: merchant.secretKey),
            ])
            #expect(replies.map(\.type) == [.customerCreated, .customerCreated])
            #expect(try await store.customerCount() == 2)
        }
    }

    @Test(arguments: StoreKind.all)
    func sameExternalIdUnderTwoMerchantsIsTwoCustomers(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let acme = try await Merchant(store, name: "Acme")
            let globex = try await Merchant(store, name: "Globex")
            let replies = try await store.handleRecording([
                command(Self.ada, key: acme.secretKey), command(Self.ada, key: globex.secretKey),
            ])
            #expect(replies.map(\.type) == [.customerCreated, .customerCreated])
            #expect(replies.map(\.replayed) == [false, false])
            #expect(replies[0].idempotencyKey != replies[1].idempotencyKey)
            let customers = try replies.map { try decodeCreated($0).customer }
            #expect(customers.map(\.merchantId) == [acme.id, globex.id])
            #expect(customers[0].id != customers[1].id)
            #expect(try await store.customerCount() == 2)
        }
    }

    @Test(arguments: StoreKind.all)
    func duplicatesInsideOneBatchBehaveLikeDuplicatesAcrossBatches(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let changed = #"{"externalId":"cus_1","name":"Someone else"}"#
            let replies = try await store.handleRecording([
                command(Self.ada, key: merchant.secretKey),
                command(Self.ada, key: merchant.secretKey),
                command(changed, key: merchant.secretKey),
                command(Self.ada, key: merchant.secretKey),
            ])
            #expect(replies.map(\.type) == [.customerCreated, .customerCreated, .customerCreateFailed, .customerCreated])
            #expect(replies.map(\.replayed) == [false, true, false, true])
            #expect(replies[1].body == replies[0].body && replies[3].body == replies[0].body)
            #expect(replies[1].messageID == replies[0].messageID)
            #expect(replies[2].errorCode == "external_id_conflict")
            #expect(try await store.customerCount() == 1)
        }
    }

    @Test(arguments: StoreKind.all)
    func failuresAreNotRecordedSoACorrectedCommandSucceeds(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let invalid = try await store.handleOne(command(#"{"externalId":"cus_9","email":"nope"}"#, key: merchant.secretKey))
            #expect(invalid.errorCode == "validation_failed")
            // A valid externalId makes the key computable.
            #expect(invalid.idempotencyKey == idempotencyKey(merchantID: merchant.id, externalID: "cus_9"))
            #expect(try decodeFailed(invalid).error.fields.map(\.field) == ["email"])
            let corrected = try await store.handleOne(command(#"{"externalId":"cus_9","email":"a@b.co"}"#, key: merchant.secretKey))
            #expect(corrected.type == .customerCreated)
            #expect(!corrected.replayed)
        }
    }

    @Test(arguments: StoreKind.all)
    func envelopeFailuresCarryNoKey(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let replies = try await store.handleRecording([
                command(Self.ada, key: merchant.secretKey, contentType: "text/plain"),
                command("{", key: merchant.secretKey),
                IncomingCommand(apiKey: merchant.secretKey, contentType: "application/json", body: Array(repeating: 0x20, count: 70_000)),
                command(#"{"externalId":" padded "}"#, key: merchant.secretKey),
            ])
            #expect(replies.map(\.errorCode) == ["unsupported_content_type", "malformed_message", "message_too_large", "validation_failed"])
            #expect(replies.allSatisfy { $0.idempotencyKey == nil && $0.type == .customerCreateFailed })
            for reply in replies {
                #expect(try decodeFailed(reply).idempotencyKey == nil)
            }
            // The same failing command gets the same message id; a different one does not.
            let again = try await store.handleOne(command("{", key: merchant.secretKey))
            #expect(again.messageID == replies[1].messageID)
            #expect(again.messageID != replies[0].messageID)
        }
    }

    /// A customer row without a processed record (written behind the worker's back) must not crash
    /// the batch or be overwritten: the unique constraint is the last guard.
    @Test(arguments: StoreKind.all)
    func uniqueConstraintIsTheFinalGuard(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let legacyID = UUID().uuidString.lowercased()
            try await store.execute(
                "INSERT INTO customers (id, merchant_id, external_id, created_at, updated_at) VALUES ('\(legacyID)', '\(merchant.id)', 'cus_1', 0, 0)")
            let reply = try await store.handleOne(command(Self.ada, key: merchant.secretKey))
            #expect(reply.errorCode == "external_id_conflict")
            #expect(try decodeFailed(reply).error.existingCustomerId == legacyID)
            #expect(try await store.customerCount() == 1)
        }
    }

    @Test(arguments: StoreKind.all)
    func aLargeBatchIsOneTransaction(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let commands = (0..<256).map { command(#"{"externalId":"bulk-\#($0)","email":"u\#($0)@example.com"}"#, key: merchant.secretKey) }
            let replies = try await store.handle(commands, now: now)
            #expect(replies.count == 256)
            #expect(replies.allSatisfy { $0.type == .customerCreated })
            #expect(try await store.customerCount() == 256)
        }
    }

    /// More rows than one PostgreSQL statement can carry parameters for (3,200 customers × 21
    /// columns > 65,535): still one transaction, every command answered.
    @Test(arguments: StoreKind.all)
    func aBatchBeyondOneStatementsParameters(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let commands = (0..<3200).map { command(#"{"externalId":"huge-\#($0)"}"#, key: merchant.secretKey) }
            let replies = try await store.handle(commands + commands.prefix(10), now: now)
            #expect(replies.count == 3210)
            #expect(replies.prefix(3200).allSatisfy { $0.type == .customerCreated && !$0.replayed })
            #expect(replies.suffix(10).allSatisfy { $0.replayed })
            #expect(try await store.customerCount() == 3200)
        }
    }
}
