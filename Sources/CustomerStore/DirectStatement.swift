import GRDB
import GRDBSQLite

/// A statement of the connection's own cache (GRDB's `cachedStatement`: prepared once per
/// connection, kept while it lives), bound and stepped directly through SQLite's C API inside a
/// GRDB `write {}`: no `StatementArguments`, no boxed values, no closure per value. GRDB keeps the
/// transaction, its busy handling and its rollback; only the statement's own work is done here.
///
/// After every step the statement is reset, so it never holds a read cursor between uses and the
/// next use binds a clean statement. A failed step or bind throws the `DatabaseError` GRDB's
/// `execute` would throw for it (its extended result code and SQLite's message), so the store's
/// failure table (`CustomerStore.failureTable`) classifies it exactly as before; an interrupted step
/// (SQLITE_INTERRUPT: GRDB interrupts a write only when its task is cancelled) throws
/// `CancellationError`, as GRDB's `execute` does then.
///
/// Text and blob values are copied once, into blocks the statement owns for the batch
/// (`ParameterBytes`), and bound from there without SQLite copying them again (`SQLITE_STATIC`: a
/// transient bind cost a `malloc` and a copy per value, ~700 instructions, fifteen a customer).
/// After every step the bindings are cleared, so no statement keeps a pointer into the blocks
/// past the step it was bound for, and a parameter a caller forgets is NULL, never an earlier
/// row's value.
///
/// Not `Sendable` (nor is GRDB's `Statement`): it lives inside one `write {}` closure.
struct DirectStatement {
    private let statement: Statement
    private let handle: SQLiteStatement
    private let connection: SQLiteConnection?
    private let parameterBytes: ParameterBytes

    init(_ db: Database, sql: String) throws {
        statement = try db.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
        connection = db.sqliteConnection
        parameterBytes = ParameterBytes(statement)
        // A statement of the cache that an earlier transaction left mid-way (it threw between a
        // step and its reset) starts afresh.
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    // MARK: Binding (1-based indexes, as SQLite numbers parameters)

    /// Binds the UTF-8 bytes of `value`, or NULL.
    func bind(_ value: String?, at index: Int32) throws {
        guard var value else { return try check(sqlite3_bind_null(handle, index)) }
        try value.withUTF8 { try bind(utf8: $0, at: index) }
    }

    /// Binds UTF-8 text (valid UTF-8, as a `String`'s), or NULL when `bytes` is nil.
    func bind(utf8 bytes: UnsafeBufferPointer<UInt8>?, at index: Int32) throws {
        guard let bytes else { return try check(sqlite3_bind_null(handle, index)) }
        let code: Int32
        if bytes.isEmpty {
            // An empty string binds the empty C string (a null pointer would bind NULL).
            code = sqlite3_bind_text(handle, index, "", 0, Self.transient)
        } else {
            let copy = parameterBytes.copy(UnsafeRawBufferPointer(bytes))
            code = sqlite3_bind_text(handle, index, copy.assumingMemoryBound(to: CChar.self), Int32(bytes.count), Self.static)
        }
        try check(code)
    }

    func bind(_ value: Int64?, at index: Int32) throws {
        guard let value else { return try check(sqlite3_bind_null(handle, index)) }
        try check(sqlite3_bind_int64(handle, index, value))
    }

    func bind(_ value: Bool, at index: Int32) throws {
        try check(sqlite3_bind_int64(handle, index, value ? 1 : 0))
    }

    /// Binds `bytes` as a blob.
    func bind(blob bytes: [UInt8], at index: Int32) throws {
        let code = bytes.withUnsafeBytes { buffer in
            // A null pointer would bind NULL: an empty array binds a zero-length blob instead.
            guard buffer.baseAddress != nil else { return sqlite3_bind_zeroblob(handle, index, 0) }
            return sqlite3_bind_blob(handle, index, parameterBytes.copy(buffer), Int32(buffer.count), Self.static)
        }
        try check(code)
    }

    // MARK: Stepping

    /// Runs a statement that returns no row (an insert, an update); then resets it.
    func execute() throws {
        defer { finishStep() }
        let code = sqlite3_step(handle)
        guard code == SQLITE_DONE else { throw failure(code) }
    }

    /// The first row of a query, read by `read` while it is current, or nil; then resets it.
    func first<T>(_ read: (Columns) throws -> T) throws -> T? {
        defer { finishStep() }
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return try read(Columns(handle: handle))
        case SQLITE_DONE: return nil
        case let code: throw failure(code)
        }
    }

    /// Reads every row of a query with `read`, each while it is current; then resets it.
    func forEachRow(_ read: (Columns) throws -> Void) throws {
        defer { finishStep() }
        while true {
            switch sqlite3_step(handle) {
            case SQLITE_ROW: try read(Columns(handle: handle))
            case SQLITE_DONE: return
            case let code: throw failure(code)
            }
        }
    }

    /// The current row's columns (0-based, as SQLite numbers them).
    struct Columns {
        let handle: SQLiteStatement

        func string(_ column: Int32) -> String {
            guard let text = sqlite3_column_text(handle, column) else { return "" }
            return String(decoding: UnsafeBufferPointer(start: text, count: Int(sqlite3_column_bytes(handle, column))), as: UTF8.self)
        }

        func bytes(_ column: Int32) -> [UInt8] {
            guard let blob = sqlite3_column_blob(handle, column) else { return [] }
            return [UInt8](UnsafeRawBufferPointer(start: blob, count: Int(sqlite3_column_bytes(handle, column))))
        }
    }

    /// Resets the statement and clears its bindings: the parameter buffer is free for the next row.
    private func finishStep() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
        parameterBytes.reuse()
    }

    // MARK: Failures

    private func check(_ code: Int32) throws {
        guard code != SQLITE_OK else { return }
        throw failure(code)
    }

    /// The error of a failed call, read before the reset that follows it.
    private func failure(_ code: Int32) -> any Error {
        if code & 0xFF == SQLITE_INTERRUPT { return CancellationError() }
        let message = connection.map { String(cString: sqlite3_errmsg($0)) }
        return DatabaseError(resultCode: ResultCode(rawValue: code), message: message, sql: statement.sql)
    }

    /// SQLite copies the value before the bind returns (`SQLITE_TRANSIENT`): for the empty string,
    /// whose pointer Swift makes for the call only.
    private static var transient: sqlite3_destructor_type { unsafeBitCast(-1, to: sqlite3_destructor_type.self) }
    /// SQLite uses the bytes where they are (`SQLITE_STATIC`, a null destructor): for copies in
    /// `ParameterBytes`, which outlive the step and are unbound after it.
    private static var `static`: sqlite3_destructor_type? { nil }
}

/// The bytes of a statement's text and blob parameters for one step (one row, or the rows of a
/// multi-row insert), in blocks allocated once per statement and batch (`DirectStatement`): a
/// block of `blockSize`, or of the value's own size when it is larger, and more blocks as a step
/// needs them. Its deinit clears the statement's bindings before freeing the blocks, so a
/// statement left bound by a throw never points into freed memory; it holds the statement so the
/// handle outlives it. GRDB's cache hands the same `Statement` to every `DirectStatement` of one
/// SQL in a transaction, so there must be one at a time per SQL (as in
/// `CreateCustomerStatements.write`): an earlier one's deinit would clear a later one's bindings.
private final class ParameterBytes {
    private let statement: Statement
    private var blocks: [UnsafeMutableRawBufferPointer] = []
    /// The block being filled, and how much of it is.
    private var current = 0
    private var used = 0
    /// A customer's row with every field at a generous length fits; a chunk of rows fills a few.
    private static let blockSize = 16 * 1024

    init(_ statement: Statement) {
        self.statement = statement
    }

    deinit {
        sqlite3_clear_bindings(statement.sqliteStatement)
        for block in blocks { block.deallocate() }
    }

    /// Where a copy of `bytes` (not empty) now is: in the block being filled, else the next one
    /// with room, else a new one.
    func copy(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawPointer {
        let source = bytes.baseAddress!
        while current < blocks.count, bytes.count > blocks[current].count - used {
            current += 1
            used = 0
        }
        if current == blocks.count {
            blocks.append(.allocate(byteCount: max(Self.blockSize, bytes.count), alignment: 1))
        }
        let destination = blocks[current].baseAddress! + used
        destination.copyMemory(from: source, byteCount: bytes.count)
        used += bytes.count
        return UnsafeRawPointer(destination)
    }

    /// The step is over and its bindings cleared: the next step writes from the first block.
    func reuse() {
        current = 0
        used = 0
    }
}
