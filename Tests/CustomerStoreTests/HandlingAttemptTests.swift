import BrokerTestSupport
import CreateCustomer
import CustomerDomain
@testable import CustomerStore
import Foundation
import PostgresStore
import Testing

@Suite("Store: handling attempts and outages", .closesResources)
struct HandlingAttemptTests {
    @Test(arguments: StoreKind.all)
    func aMarkerSurvivesUntilItsWorkCommits(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let key = HandlingAttempt.key(messageID: "m-1", body: Array(#"{"externalId":"a"}"#.utf8))
            #expect(key.count == 64)
            #expect(key != HandlingAttempt.key(messageID: "m-2", body: Array(#"{"externalId":"a"}"#.utf8)))
            #expect(try await store.beginAttempt(key: key, now: now) == 0)
            // The worker died here: the next one finds the marker.
            #expect(try await store.beginAttempt(key: key, now: now) == 1)
            let command = IncomingCommand(apiKey: nil, contentType: "application/json", body: Array(#"{"externalId":"a"}"#.utf8))
            let reply = try await store.handleAttempt(command, key: key, now: now)
            #expect(reply.errorCode == "unauthorized")
            #expect(try await store.beginAttempt(key: key, now: now) == 0, "removed with the work")
            try await store.clearAttempt(key: key)
            #expect(try await store.beginAttempt(key: key, now: now) == 0, "removed by clearAttempt")
        }
    }

    @Test func sqliteOutagesAreTheDatabasesFailuresNotTheCommands() {
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

    @Test func postgresOutagesAreTheServersFailuresNotTheCommands() {
        func server(_ state: String) -> PostgresStoreError { .server(operation: "x", location: "l", sqlState: state, message: "m") }
        #expect(PostgresStoreError.connection(operation: "x", location: "l", reason: "refused").isOutage)
        #expect(server("08006").isOutage)  // connection failure
        #expect(server("53100").isOutage)  // disk full
        #expect(server("57P01").isOutage)  // admin shutdown
        #expect(server("25006").isOutage)  // read-only (a standby)
        #expect(!server("23505").isOutage) // unique violation
        #expect(!server("22003").isOutage) // numeric value out of range
        #expect(!server("40P01").isOutage, "a deadlock is retried as a conflict, not an outage")
    }
}
