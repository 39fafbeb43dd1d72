import BrokerTestSupport
import CreateCustomer
import CustomerDomain
import CustomerStore
import Foundation
import Testing

/// A stored value the store cannot decode is an error naming the column, never a silent default.
@Suite("Store: stored values it cannot decode", .closesResources)
struct StoredValueTests {
    @Test(arguments: StoreKind.all)
    func anUnknownReplyTypeNamesTheColumn(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let body = #"{"externalId":"cus_stored"}"#
            let command = IncomingCommand(apiKey: merchant.secretKey, contentType: "application/json", body: Array(body.utf8))
            _ = try await store.handleOne(command)
            try await store.execute("UPDATE processed_requests SET reply_type = 'CustomerUpdated'")
            do {
                _ = try await store.handleOne(command)
                Issue.record("decoded an unknown reply type")
            } catch let error as UndecodableStoredValue {
                #expect(error.table == "processed_requests" && error.column == "reply_type" && error.value == "CustomerUpdated")
                #expect(store.classify(error).kind == .command, "that command fails alone")
            }
        }
    }
}
