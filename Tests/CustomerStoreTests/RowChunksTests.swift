@testable import CustomerStore
import Testing

/// How a batch's rows are cut into statements, and the shape of those statements (pure: no database).
struct RowChunksTests {
    @Test func rowsAreCutIntoTheLargestSizesFirstAndCoverEveryRowOnce() {
        #expect(RowChunks.of(0..<0) == [])
        #expect(RowChunks.of(0..<1) == [0..<1])
        #expect(RowChunks.of(0..<128) == [0..<64, 64..<128])
        #expect(RowChunks.of(0..<70) == [0..<64, 64..<68, 68..<70])
        #expect(RowChunks.of(3..<10) == [3..<7, 7..<9, 9..<10])
        for count in 0...300 {
            let chunks = RowChunks.of(0..<count)
            #expect(chunks.flatMap { Array($0) } == Array(0..<count), "\(count) rows")
            #expect(chunks.allSatisfy { RowChunks.sizes.contains($0.count) }, "\(count) rows")
            #expect(chunks.count <= count / 64 + RowChunks.sizes.count - 1, "\(count) rows")
        }
    }

    @Test func eachRowNumbersItsParametersAfterThePreviousRow() {
        let insert = MultiRowInsert(head: "INSERT INTO t (a, b, c)", parameterOfEachColumn: [1, 2, 2], tail: "ON CONFLICT DO NOTHING")
        #expect(insert.parametersPerRow == 2)
        #expect(insert.sql(rows: 1) == "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?2) ON CONFLICT DO NOTHING")
        #expect(insert.sql(rows: 2) == "INSERT INTO t (a, b, c) VALUES (?1, ?2, ?2), (?3, ?4, ?4) ON CONFLICT DO NOTHING")
        #expect(insert.firstParameter(ofRow: 0) == 1)
        #expect(insert.firstParameter(ofRow: 1) == 3)
        #expect(insert.sql(rows: 64).hasSuffix("(?127, ?128, ?128) ON CONFLICT DO NOTHING"))
        let plain = MultiRowInsert(head: "INSERT INTO t (a)", parameterOfEachColumn: [1], tail: "")
        #expect(plain.sql(rows: 4) == "INSERT INTO t (a) VALUES (?1), (?2), (?3), (?4)")
    }

    /// A merchant's record lookups: the merchant, then one parameter per external id.
    @Test func aRecordLookupNamesTheMerchantOnceAndEachExternalId() {
        #expect(CreateCustomerStatements.recordsOfExternalIDs.count == RowChunks.sizes.count)
        #expect(CreateCustomerStatements.recordsOfExternalIDs[RowChunks.position(ofSize: 1)].hasSuffix("c.external_id IN (?2)"))
        #expect(CreateCustomerStatements.recordsOfExternalIDs[RowChunks.position(ofSize: 4)].hasSuffix("c.external_id IN (?2, ?3, ?4, ?5)"))
        #expect(CreateCustomerStatements.recordsOfExternalIDs[0].hasSuffix("?64, ?65)"))
    }

    /// The customers' statement: 21 columns from 20 parameters a row (`updated_at` is `created_at`).
    @Test func aCustomerRowReusesItsCreatedAtForUpdatedAt() {
        let insert = CreateCustomerStatements.insertCustomers
        #expect(insert.parametersPerRow == 20)
        #expect(insert.sql(rows: 2).contains("?19, ?20, ?20), (?21, ?22"))
        #expect(insert.sql(rows: 2).hasSuffix("?39, ?40, ?40) ON CONFLICT (merchant_id, external_id) DO NOTHING"))
    }
}
