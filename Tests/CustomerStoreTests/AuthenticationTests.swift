import CustomerDomain
import BrokerTestSupport
import CreateCustomer
@testable import CustomerStore
import Foundation
import GRDB
import Testing

@Suite("Store: merchants and API keys", .closesResources)
struct AuthenticationTests {
    static let body = #"{"externalId":"cus_1"}"#

    @Test(arguments: StoreKind.all)
    func keysAreRandomPrefixedAndStoredOnlyAsHashes(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            #expect(merchant.secretKey.hasPrefix("sk_"))
            #expect(merchant.publishableKey.hasPrefix("pk_"))
            // 16 hex digits of key id and 64 of secret (256 bits).
            #expect(merchant.secretKey.count == 84)
            let other = try await Merchant(store)
            #expect(other.secretKey != merchant.secretKey)
            let stored = try await store.strings(
                "SELECT CAST(length(key_hash) AS TEXT), id, merchant_id, type, CAST(created_at AS TEXT) FROM api_keys")
            #expect(stored.count == 4)
            for row in stored {
                #expect(row[0] == "32")
                #expect(!row.contains { ($0 ?? "").contains(merchant.secretKey) || ($0 ?? "").contains(merchant.publishableKey) })
            }
        }
    }

    @Test(arguments: StoreKind.all)
    func authenticateClassifiesKeys(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            #expect(try await store.authenticate(apiKey: merchant.secretKey) == .merchant(id: merchant.id))
            #expect(try await store.authenticate(apiKey: merchant.publishableKey) == .forbidden)
            #expect(try await store.authenticate(apiKey: nil) == .unauthorized(.missing))
            #expect(try await store.authenticate(apiKey: "") == .unauthorized(.missing))
            #expect(try await store.authenticate(apiKey: "garbage") == .unauthorized(.unknown))
            // Right key id, wrong secret.
            let forged = String(merchant.secretKey.dropLast()) + (merchant.secretKey.hasSuffix("0") ? "1" : "0")
            #expect(try await store.authenticate(apiKey: forged) == .unauthorized(.unknown))
            try await store.revokeAPIKey(String(merchant.secretKey.prefix(19)))
            #expect(try await store.authenticate(apiKey: merchant.secretKey) == .unauthorized(.revoked))
        }
    }

    @Test(arguments: StoreKind.all)
    func commandsWithBadKeysAreRejected(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let revoked = try await store.createAPIKey(merchantID: merchant.id, type: .secret)
            try await store.revokeAPIKey(revoked)
            let replies = try await store.handleRecording([
                command(Self.body, key: nil),
                command(Self.body, key: "sk_0123456789abcdef_" + String(repeating: "0", count: 64)),
                command(Self.body, key: revoked),
                command(Self.body, key: merchant.publishableKey),
                command(Self.body, key: merchant.secretKey),
            ])
            #expect(replies.map(\.errorCode) == ["unauthorized", "unauthorized", "unauthorized", "forbidden", nil])
            #expect(replies.prefix(4).allSatisfy { $0.idempotencyKey == nil })
            let forbidden = try decodeFailed(replies[3])
            #expect(forbidden.error.message == "API key must be of type secret")
            #expect(try decodeFailed(replies[0]).error.message == "The x-api-key header is missing.")
            #expect(try await store.customerCount() == 1)
        }
    }

    @Test(arguments: StoreKind.all)
    func authenticationComesBeforeTheBody(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let reply = try await store.handleOne(command("not json", key: nil, contentType: "text/plain"))
            #expect(reply.errorCode == "unauthorized")
        }
    }

    @Test(arguments: StoreKind.all)
    func newKeysWorkAndRevocationTakesAnyReference(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let second = try await store.createAPIKey(merchantID: merchant.id, type: .secret)
            #expect(try await store.authenticate(apiKey: second) == .merchant(id: merchant.id))
            let publishable = try await store.createAPIKey(merchantID: merchant.id, type: .publishable)
            #expect(try await store.authenticate(apiKey: publishable) == .forbidden)

            let keyID = String(second.dropFirst(3).prefix(16))
            #expect(try await store.revokeAPIKey(keyID) == keyID)
            // Again, and by the whole key: still revoked, no error.
            #expect(try await store.revokeAPIKey(second) == keyID)
            #expect(try await store.authenticate(apiKey: second) == .unauthorized(.revoked))
            #expect(try await store.authenticate(apiKey: merchant.secretKey) == .merchant(id: merchant.id))
        }
    }

    @Test(arguments: StoreKind.all)
    func adminErrors(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            await #expect(throws: AdministrationError.merchantNotFound("nobody")) {
                try await store.createAPIKey(merchantID: "nobody", type: .secret)
            }
            await #expect(throws: AdministrationError.apiKeyNotFound("sk_ffffffffffffffff")) {
                try await store.revokeAPIKey("sk_ffffffffffffffff")
            }
            await #expect(throws: AdministrationError.apiKeyNotFound("nonsense")) {
                try await store.revokeAPIKey("nonsense")
            }
            // The prefix names the type: a secret key id with pk_ is not that key.
            let secretID = String(merchant.secretKey.dropFirst(3).prefix(16))
            await #expect(throws: AdministrationError.apiKeyNotFound("pk_" + secretID)) {
                try await store.revokeAPIKey("pk_" + secretID)
            }
            await #expect(throws: AdministrationError.invalidArgument("the merchant name must not be empty")) {
                try await store.createMerchant(name: "  ")
            }
        }
    }
}
