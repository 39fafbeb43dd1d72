@testable import CustomerStore
import Testing

/// The shape of the multi-row inserts (pure: no database).
struct MultiRowInsertTests {
    @Test func rowsAreCutIntoTheLargestSizesFirstAndCoverEveryRowOnce() {
        #expect(MultiRowInsert.chunks(of: 0..<0) == [])
        #expect(MultiRowInsert.chunks(of: 0..<1) == [0..<1])
        #expect(MultiRowInsert.chunks(of: 0..<128) == [0..<64, 64..<128])
        #expect(MultiRowInsert.chunks(of: 0..<70) == [0..<64, 64..<68, 68..<70])
        #expect(MultiRowInsert.chunks(of: 3..<10) == [3..<7, 7..<9, 9..<10])
        for count in 0...300 {
            let chunks = MultiRowInsert.chunks(of: 0..<count)
            #expect(chunks.flatMap { Array($0) } == Array(0..<count), "\(count) rows")
            #expect(chunks.allSatisfy { MultiRowInsert.sizes.contains($0.count) }, "\(count) rows")
            #expect(chunks.count <= count / 64 + MultiRowInsert.sizes.count - 1, "\(count) rows")
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

    /// The customers' statement: 21 columns from 20 parameters a row (`updated_at` is `created_at`).
    @Test func aCustomerRowReusesItsCreatedAtForUpdatedAt() {
        let insert = CreateCustomerStatements.insertCustomers
        #expect(insert.parametersPerRow == 20)
        #expect(insert.sql(rows: 2).contains("?19, ?20, ?20), (?21, ?22"))
        #expect(insert.sql(rows: 2).hasSuffix("?39, ?40, ?40) ON CONFLICT (merchant_id, external_id) DO NOTHING"))
    }
}
