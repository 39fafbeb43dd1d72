@testable import AMQP
import Testing

/// `FieldValue.decodeHeaders` refuses headers nested deeper than the limit, flat or not.
@Suite("Header nesting limit (no broker)")
struct HeaderNestingLimitTests {
    /// A value nested `levels` tables deep below the headers' own table: 0 is a plain string.
    static func nested(_ levels: Int) -> FieldValue {
        (0..<levels).reduce(FieldValue.string("leaf")) { inner, _ in .table(["k": inner]) }
    }

    @Test func flatHeadersNestOneLevel() {
        let arena = EncodingArena()
        let flat = arena.table(["x-api-key": "sk_test", "n": 3, "ok": true, "v": .void])
        #expect(FieldValue.nests(flat, within: 1))
        #expect(!FieldValue.nests(flat, within: 0))
        #expect(FieldValue.decodeHeaders(flat) == ["x-api-key": "sk_test", "n": 3, "ok": true, "v": .void])
    }

    @Test(arguments: [1, 2, 5])
    func aTableOrArrayAddsALevel(_ levels: Int) {
        let arena = EncodingArena()
        let table = arena.table(["x-api-key": "sk_test", "deep": Self.nested(levels)])
        #expect(!FieldValue.nests(table, within: levels))
        #expect(FieldValue.nests(table, within: levels + 1))
        let array = arena.table(["list": .array([.string("a"), Self.nested(levels - 1)])])
        #expect(!FieldValue.nests(array, within: levels))
        #expect(FieldValue.nests(array, within: levels + 1))
    }

    @Test func emptyHeadersNestOneLevel() {
        let arena = EncodingArena()
        let empty = arena.table([:])
        #expect(FieldValue.nests(empty, within: 1))
        #expect(!FieldValue.nests(empty, within: 0))
    }
}
