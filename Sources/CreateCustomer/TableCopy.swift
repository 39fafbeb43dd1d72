/// One value of a row being copied between stores, as SQLite stores it (booleans are integers).
public enum CellValue: Sendable, Hashable {
    case null
    case integer(Int64)
    case text(String)
    case blob([UInt8])
}

/// A chunk of rows of one table, for copying a database into another store.
public struct TableChunk: Sendable {
    public var columns: [String]
    public var rows: [[CellValue]]
    /// Where the next chunk starts (the source's own cursor).
    public var next: Int64?

    public init(columns: [String], rows: [[CellValue]], next: Int64?) {
        self.columns = columns
        self.rows = rows
        self.next = next
    }
}

/// The tables a copy moves, parents before children (foreign keys).
public enum CopiedTable: String, Sendable, CaseIterable {
    case merchants
    case apiKeys = "api_keys"
    case plans
    case customers
    case subscriptions
    case processedRequests = "processed_requests"
}
