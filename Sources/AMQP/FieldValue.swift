import CRabbitMQ
import Glibc

/// A value in an AMQP field table (message headers, queue and consumer arguments).
public enum FieldValue: Sendable, Hashable {
    case string(String)
    case bool(Bool)
    case int(Int64)
    case double(Double)
    /// Seconds since the epoch, as AMQP timestamps are.
    case timestamp(UInt64)
    case bytes([UInt8])
    case array([FieldValue])
    case table([String: FieldValue])
    case void

    public var stringValue: String? { if case .string(let value) = self { value } else { nil } }
    public var boolValue: Bool? { if case .bool(let value) = self { value } else { nil } }
    public var intValue: Int64? { if case .int(let value) = self { value } else { nil } }
}

extension FieldValue: ExpressibleByStringLiteral, ExpressibleByBooleanLiteral, ExpressibleByIntegerLiteral {
    public init(stringLiteral value: String) { self = .string(value) }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
}

/// Memory for the C structures of one outgoing call (tables, byte strings), released together
/// once the call has returned. rabbitmq-c's own pool allocator, owned by one connection.
final class EncodingArena {
    private let pool: UnsafeMutablePointer<amqp_pool_t>

    init() {
        pool = .allocate(capacity: 1)
        init_amqp_pool(pool, 16 * 1024)
    }

    deinit {
        empty_amqp_pool(pool)
        pool.deallocate()
    }

    /// Frees everything allocated since the last reset, keeping the pages for reuse.
    func reset() { recycle_amqp_pool(pool) }

    func bytes(_ string: String) -> amqp_bytes_t {
        var string = string
        return string.withUTF8 { bytes($0) }
    }

    func bytes(_ buffer: UnsafeBufferPointer<UInt8>) -> amqp_bytes_t {
        guard !buffer.isEmpty else { return amqp_bytes_t(len: 0, bytes: nil) }
        var result = amqp_bytes_t()
        amqp_pool_alloc_bytes(pool, buffer.count, &result)
        result.bytes.copyMemory(from: buffer.baseAddress!, byteCount: buffer.count)
        return result
    }

    func table(_ entries: [String: FieldValue]) -> amqp_table_t {
        guard !entries.isEmpty else { return amqp_table_t(num_entries: 0, entries: nil) }
        let memory = amqp_pool_alloc(pool, MemoryLayout<amqp_table_entry_t>.stride * entries.count)!
        let cEntries = memory.bindMemory(to: amqp_table_entry_t.self, capacity: entries.count)
        for (index, (key, value)) in entries.enumerated() {
            cEntries[index] = amqp_table_entry_t(key: bytes(key), value: field(value))
        }
        // Sorted by their keys' bytes, so the encoded table is deterministic: in place, where
        // sorting the keys as `String`s took an array and a lookup per key (a reply's headers,
        // twice a command).
        var sorting = UnsafeMutableBufferPointer(start: cEntries, count: entries.count)
        sorting.sort { Self.precedes($0.key, $1.key) }
        return amqp_table_t(num_entries: Int32(entries.count), entries: cEntries)
    }

    /// Byte order: `left` is a proper prefix of `right`, or its first differing byte is lower.
    static func precedes(_ left: amqp_bytes_t, _ right: amqp_bytes_t) -> Bool {
        let common = min(left.len, right.len)
        let order = common == 0 ? 0 : memcmp(left.bytes, right.bytes, common)
        return order != 0 ? order < 0 : left.len < right.len
    }

    func field(_ value: FieldValue) -> amqp_field_value_t {
        var field = amqp_field_value_t()
        switch value {
        case .string(let string):
            field.kind = UInt8(AMQP_FIELD_KIND_UTF8.rawValue)
            field.value.bytes = bytes(string)
        case .bool(let bool):
            field.kind = UInt8(AMQP_FIELD_KIND_BOOLEAN.rawValue)
            field.value.boolean = bool ? 1 : 0
        case .int(let int):
            field.kind = UInt8(AMQP_FIELD_KIND_I64.rawValue)
            field.value.i64 = int
        case .double(let double):
            field.kind = UInt8(AMQP_FIELD_KIND_F64.rawValue)
            field.value.f64 = double
        case .timestamp(let seconds):
            field.kind = UInt8(AMQP_FIELD_KIND_TIMESTAMP.rawValue)
            field.value.u64 = seconds
        case .bytes(let raw):
            field.kind = UInt8(AMQP_FIELD_KIND_BYTES.rawValue)
            field.value.bytes = raw.withUnsafeBufferPointer { bytes($0) }
        case .array(let elements):
            field.kind = UInt8(AMQP_FIELD_KIND_ARRAY.rawValue)
            field.value.array = array(elements)
        case .table(let entries):
            field.kind = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
            field.value.table = table(entries)
        case .void:
            field.kind = UInt8(AMQP_FIELD_KIND_VOID.rawValue)
        }
        return field
    }

    private func array(_ elements: [FieldValue]) -> amqp_array_t {
        guard !elements.isEmpty else { return amqp_array_t(num_entries: 0, entries: nil) }
        let memory = amqp_pool_alloc(pool, MemoryLayout<amqp_field_value_t>.stride * elements.count)!
        let cElements = memory.bindMemory(to: amqp_field_value_t.self, capacity: elements.count)
        for (index, element) in elements.enumerated() {
            cElements[index] = field(element)
        }
        return amqp_array_t(num_entries: Int32(elements.count), entries: cElements)
    }
}

// MARK: - Decoding (copies out of rabbitmq-c's buffers, which are reused after the call)

extension String {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = ""
            return
        }
        self = String(decoding: UnsafeRawBufferPointer(start: base, count: bytes.len), as: UTF8.self)
    }
}

extension Array where Element == UInt8 {
    init(amqpBytes bytes: amqp_bytes_t) {
        guard bytes.len > 0, let base = bytes.bytes else {
            self = []
            return
        }
        self = Array(UnsafeRawBufferPointer(start: base, count: bytes.len))
    }
}

extension FieldValue {
    /// The deepest nesting of tables and arrays a message's headers may have (the headers table
    /// itself is level 1). rabbitmq-c 0.11 sets no limit; a sender could otherwise make decoding,
    /// and releasing the decoded value, recurse as deep as one frame allows on the connection's
    /// thread. Real headers (`x-death`: an array of tables of arrays) nest 3 or 4 levels.
    public static let maximumNesting = 64

    /// The headers, or nil when they nest deeper than `maximumNesting`.
    static func decodeHeaders(_ table: amqp_table_t) -> [String: FieldValue]? {
        // Checked first with an explicit stack, so the recursive decoding below is bounded.
        guard nests(table, within: maximumNesting) else { return nil }
        return decodeTable(table)
    }

    /// Whether no table or array in `table` is nested deeper than `limit` levels. Walks the C
    /// structure with a heap-allocated stack: no recursion however deep the input.
    static func nests(_ table: amqp_table_t, within limit: Int) -> Bool {
        // A command's headers are flat (`x-api-key`, trace context): answered without the stack.
        if limit >= 1, table.num_entries > 0, let entries = table.entries, (0..<Int(table.num_entries)).allSatisfy({
            let kind = amqp_field_value_kind_t(UInt32(entries[$0].value.kind))
            return kind != AMQP_FIELD_KIND_TABLE && kind != AMQP_FIELD_KIND_ARRAY
        }) {
            return true
        }
        var pending: [(field: amqp_field_value_t, depth: Int)] = []
        func push(_ field: amqp_field_value_t, depth: Int) -> Bool {
            let kind = amqp_field_value_kind_t(UInt32(field.kind))
            guard kind == AMQP_FIELD_KIND_TABLE || kind == AMQP_FIELD_KIND_ARRAY else { return true }
            guard depth <= limit else { return false }
            pending.append((field, depth))
            return true
        }
        var root = amqp_field_value_t()
        root.kind = UInt8(AMQP_FIELD_KIND_TABLE.rawValue)
        root.value.table = table
        guard push(root, depth: 1) else { return false }
        while let (field, depth) = pending.popLast() {
            if amqp_field_value_kind_t(UInt32(field.kind)) == AMQP_FIELD_KIND_TABLE {
                let table = field.value.table
                guard table.num_entries > 0, let entries = table.entries else { continue }
                for index in 0..<Int(table.num_entries) where !push(entries[index].value, depth: depth + 1) { return false }
            } else {
                let array = field.value.array
                guard array.num_entries > 0, let entries = array.entries else { continue }
                for index in 0..<Int(array.num_entries) where !push(entries[index], depth: depth + 1) { return false }
            }
        }
        return true
    }

    static func decodeTable(_ table: amqp_table_t) -> [String: FieldValue] {
        guard table.num_entries > 0, let entries = table.entries else { return [:] }
        var result = [String: FieldValue](minimumCapacity: Int(table.num_entries))
        for index in 0..<Int(table.num_entries) {
            result[String(amqpBytes: entries[index].key)] = FieldValue(entries[index].value)
        }
        return result
    }

    init(_ field: amqp_field_value_t) {
        switch amqp_field_value_kind_t(UInt32(field.kind)) {
        case AMQP_FIELD_KIND_BOOLEAN: self = .bool(field.value.boolean != 0)
        case AMQP_FIELD_KIND_I8: self = .int(Int64(field.value.i8))
        case AMQP_FIELD_KIND_U8: self = .int(Int64(field.value.u8))
        case AMQP_FIELD_KIND_I16: self = .int(Int64(field.value.i16))
        case AMQP_FIELD_KIND_U16: self = .int(Int64(field.value.u16))
        case AMQP_FIELD_KIND_I32: self = .int(Int64(field.value.i32))
        case AMQP_FIELD_KIND_U32: self = .int(Int64(field.value.u32))
        case AMQP_FIELD_KIND_I64: self = .int(field.value.i64)
        case AMQP_FIELD_KIND_U64: self = .int(Int64(truncatingIfNeeded: field.value.u64))
        case AMQP_FIELD_KIND_F32: self = .double(Double(field.value.f32))
        case AMQP_FIELD_KIND_F64: self = .double(field.value.f64)
        case AMQP_FIELD_KIND_TIMESTAMP: self = .timestamp(field.value.u64)
        case AMQP_FIELD_KIND_UTF8: self = .string(String(amqpBytes: field.value.bytes))
        case AMQP_FIELD_KIND_BYTES: self = .bytes([UInt8](amqpBytes: field.value.bytes))
        case AMQP_FIELD_KIND_TABLE: self = .table(Self.decodeTable(field.value.table))
        case AMQP_FIELD_KIND_ARRAY:
            let array = field.value.array
            var elements: [FieldValue] = []
            if array.num_entries > 0, let entries = array.entries {
                elements = (0..<Int(array.num_entries)).map { FieldValue(entries[$0]) }
            }
            self = .array(elements)
        default: self = .void
        }
    }
}
