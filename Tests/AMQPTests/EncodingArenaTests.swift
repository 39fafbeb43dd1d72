@testable import AMQP
import CRabbitMQ
import Testing

/// A table's entries are encoded in their keys' byte order, each with its own value.
@Suite("Encoding arena (no broker)")
struct EncodingArenaTests {
    /// The keys of an encoded table, in the order they are encoded.
    private static func keys(_ table: amqp_table_t) -> [[UInt8]] {
        (0..<Int(table.num_entries)).map { index in
            let key = table.entries[index].key
            return key.len == 0 ? [] : Array(UnsafeRawBufferPointer(start: key.bytes, count: key.len))
        }
    }

    @Test(arguments: [0, 1, 2, 7, 40])
    func entriesAreInTheirKeysByteOrderWithTheirOwnValues(_ extra: Int) {
        let arena = EncodingArena()
        var headers: [String: FieldValue] = [
            "x-replayed": .bool(true), "x-idempotency-key": "k", "b": 2, "a": 1, "ab": "prefix", "A": "upper", "é": "two bytes",
        ]
        for index in 0..<extra { headers["x-extra-\(extra - index)"] = .int(Int64(index)) }
        let table = arena.table(headers)
        let keys = Self.keys(table)
        #expect(keys.count == headers.count)
        #expect(keys == keys.sorted { $0.lexicographicallyPrecedes($1) }, "\(keys.map { String(decoding: $0, as: UTF8.self) })")
        #expect(FieldValue.decodeHeaders(table) == headers)
    }
}
