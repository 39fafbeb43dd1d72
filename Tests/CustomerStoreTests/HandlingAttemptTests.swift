import BrokerTestSupport
import CreateCustomer
import CustomerDomain
@testable import CustomerStore
import Foundation
import PostgresStore
import Testing

@Suite("Store: handling attempts", .closesResources)
struct HandlingAttemptTests {
    @Test(arguments: StoreKind.all)
    func aMarkerSurvivesUntilItsWorkCommits(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let body = Array(#"{"externalId":"a"}"#.utf8)
            let key = HandlingAttempt.key(apiKey: "sk_0123456789abcdef_secret", messageID: "m-1", body: body)
            #expect(key.count == 64)
            #expect(key != HandlingAttempt.key(apiKey: "sk_0123456789abcdef_secret", messageID: "m-2", body: body))
            #expect(try await store.beginAttempt(key: key, now: now) == 0)
            // The worker died here: the next one finds the marker.
            #expect(try await store.beginAttempt(key: key, now: now) == 1)
            let command = IncomingCommand(apiKey: nil, contentType: "application/json", body: body)
            let outcome = try await store.handleAttempt(command, key: key, now: now)
            #expect(outcome.reply?.errorCode == "unauthorized")
            #expect(try await store.beginAttempt(key: key, now: now) == 0, "removed with the work")
            try await store.clearAttempt(key: key)
            #expect(try await store.beginAttempt(key: key, now: now) == 0, "removed by clearAttempt")
        }
    }

    /// The same message id and body sent with another merchant's key is another command.
    @Test func theKeyIncludesTheMerchantsKeyButNeverItsSecret() {
        let body = Array(#"{"externalId":"a"}"#.utf8)
        let one = HandlingAttempt.key(apiKey: "sk_0123456789abcdef_secret", messageID: "m", body: body)
        let other = HandlingAttempt.key(apiKey: "sk_fedcba9876543210_secret", messageID: "m", body: body)
        let sameKeyOtherSecret = HandlingAttempt.key(apiKey: "sk_0123456789abcdef_another", messageID: "m", body: body)
        #expect(one != other)
        #expect(one == sameKeyOtherSecret, "only the key id, which names the merchant, goes into the key")
        // Markers outlive a deploy: the key of a command never changes (SHA-256 of
        // "0123456789abcdef\0m\0" and the body, lowercase hex, as every version wrote it).
        #expect(one == "dc2f2b05c2da4ed56e15f0e4a8b512bfd3b350f5560d2977b76d9287a87574e2")
        #expect(HandlingAttempt.key(apiKey: nil, messageID: nil, body: [])
            == "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7", "SHA-256 of two zero bytes")
    }

    /// A marker left behind longer ago than `HandlingAttempt.lifetime` no longer counts.
    @Test(arguments: StoreKind.all)
    func markersExpire(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let key = HandlingAttempt.key(apiKey: nil, messageID: "old", body: [1])
            let long = now.addingTimeInterval(-TimeInterval(HandlingAttempt.lifetime.components.seconds) - 60)
            let first = try await store.beginAttempt(key: key, now: long)
            #expect(first == 0)
            #expect(try await store.beginAttempt(key: key, now: long) == 1)
            #expect(try await store.beginAttempt(key: key, now: now) == 0, "expired: counts from one again")
            #expect(try await store.beginAttempt(key: key, now: now) == 1)
        }
    }
}
