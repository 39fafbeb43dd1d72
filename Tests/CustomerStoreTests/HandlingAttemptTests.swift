import CustomerDomain
@testable import CustomerStore
import Foundation
import Testing

@Suite("Store: handling attempts and outages")
struct HandlingAttemptTests {
    @Test func aMarkerSurvivesUntilItsWorkCommits() async throws {
        try await withStore { store, _ in
            let key = CustomerStore.attemptKey(messageID: "m-1", body: Array(#"{"externalId":"a"}"#.utf8))
            #expect(key.count == 64)
            #expect(key != CustomerStore.attemptKey(messageID: "m-2", body: Array(#"{"externalId":"a"}"#.utf8)))
            #expect(try await store.beginAttempt(key: key, now: now) == 0)
            // The worker died here: the next one finds the marker.
            #expect(try await store.beginAttempt(key: key, now: now) == 1)
            #expect(try await store.attempts(key: key) == 2)
            let command = IncomingCommand(apiKey: nil, contentType: "application/json", body: Array(#"{"externalId":"a"}"#.utf8))
            let reply = try await store.handleAttempt(command, key: key, now: now)
            #expect(reply.errorCode == "unauthorized")
            #expect(try await store.attempts(key: key) == 0, "removed with the work")
            _ = try await store.beginAttempt(key: key, now: now)
            try await store.clearAttempt(key: key)
            #expect(try await store.attempts(key: key) == 0)
        }
    }

    @Test func outagesAreTheDatabasesFailuresNotTheCommands() {
        func database(_ code: Int32) -> CustomerStoreError { .database(operation: "x", path: "p", code: code, message: "m") }
        #expect(database(5).isOutage)      // busy
        #expect(database(517).isOutage)    // SQLITE_BUSY_SNAPSHOT
        #expect(database(13).isOutage)     // full
        #expect(database(8).isOutage)      // read-only
        #expect(database(10).isOutage)     // I/O
        #expect(!database(19).isOutage)    // constraint
        #expect(!database(20).isOutage)    // mismatch
        #expect(!CustomerStoreError.unexpected(operation: "x", description: "plan out of range").isOutage)
        #expect(!CustomerStoreError.cancelled(operation: "x").isOutage)
    }
}
