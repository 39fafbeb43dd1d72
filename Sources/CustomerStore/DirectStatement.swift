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
/// Not `Sendable` (nor is GRDB's `Statement`): it lives inside one `write {}` closure.
struct DirectStatement {
    private let statement: Statement
    private let handle: SQLiteStatement
    private let connection: SQLiteConnection?

    init(_ db: Database, sql: String) throws {
        statement = try db.cachedStatement(sql: sql)
        handle = statement.sqliteStatement
        connection = db.sqliteConnection
        // A statement of the cache that an earlier transaction left mid-way (it threw between a
        // step and its reset) starts afresh.
        sqlite3_reset(handle)
    }

    // MARK: Binding (1-based indexes, as SQLite numbers parameters)

    /// Binds the UTF-8 bytes of `value` (copied by SQLite), or NULL.
    func bind(_ value: String?, at index: Int32) throws {
        guard var value else { return try check(sqlite3_bind_null(handle, index)) }
        let code = value.withUTF8 { bytes in
            bytes.withMemoryRebound(to: CChar.self) { text in
                // A null pointer would bind NULL: an empty string binds the empty C string instead.
                guard let start = text.baseAddress else { return sqlite3_bind_text(handle, index, "", 0, Self.transient) }
                return sqlite3_bind_text(handle, index, start, Int32(text.count), Self.transient)
            }
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

    /// Binds `bytes` as a blob (copied by SQLite).
    func bind(blob bytes: [UInt8], at index: Int32) throws {
        let code = bytes.withUnsafeBytes { buffer in
            // A null pointer would bind NULL: an empty array binds a zero-length blob instead.
            guard let start = buffer.baseAddress else { return sqlite3_bind_zeroblob(handle, index, 0) }
            return sqlite3_bind_blob(handle, index, start, Int32(buffer.count), Self.transient)
        }
        try check(code)
    }

    // MARK: Stepping

    /// Runs a statement that returns no row (an insert, an update); then resets it.
    func execute() throws {
        defer { sqlite3_reset(handle) }
        let code = sqlite3_step(handle)
        guard code == SQLITE_DONE else { throw failure(code) }
    }

    /// The first row of a query, read by `read` while it is current, or nil; then resets it.
    func first<T>(_ read: (Columns) throws -> T) throws -> T? {
        defer { sqlite3_reset(handle) }
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return try read(Columns(handle: handle))
        case SQLITE_DONE: return nil
        case let code: throw failure(code)
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

    /// SQLite copies the value before the bind returns (`SQLITE_TRANSIENT`): the Swift buffers
    /// bound are only valid inside their `withUTF8` / `withUnsafeBytes` closures.
    private static var transient: sqlite3_destructor_type { unsafeBitCast(-1, to: sqlite3_destructor_type.self) }
}
