import DatabaseURL
import CreateCustomer
import CustomerStore
import CustomerWorker
import Logging
import PostgresStore

/// `customer-worker copy-database`: moves an existing SQLite database into PostgreSQL, table by
/// table in chunks (merchants, API keys, plans, customers, subscriptions, processed records), so
/// replays of commands handled before the move keep their bytes. Rows already in the destination
/// are kept, so an interrupted copy can be run again.
public enum DatabaseCopy {
    public struct TableSummary: Sendable, Hashable {
        public var table: CopiedTable
        public var read: Int
        public var inserted: Int
    }

    public static let chunkSize = 1000

    /// Copies `source` (SQLite) into `destination` (PostgreSQL, migrated first) and returns what
    /// each table contributed.
    public static func copy(from source: DatabaseLocation, to destination: DatabaseLocation, logger: Logger,
                            progress: @Sendable (TableSummary) -> Void = { _ in }) async throws -> [TableSummary] {
        guard case .sqlite(let path) = source else {
            throw DatabaseLocationError(message: "the source must be a SQLite database, got \(source.redacted)")
        }
        guard case .postgres(let url) = destination else {
            throw DatabaseLocationError(message: "the destination must be a PostgreSQL database, got \(destination.redacted)")
        }
        let sqlite = try CustomerStore(path: path)
        try await sqlite.migrate()
        return try await PostgresStore(url: url, logger: logger).withRunningClient { postgres in
            try await postgres.migrate()
            var summaries: [TableSummary] = []
            for table in CopiedTable.allCases {
                var summary = TableSummary(table: table, read: 0, inserted: 0)
                var cursor: Int64?
                repeat {
                    let chunk = try await sqlite.exportRows(table, after: cursor, limit: chunkSize)
                    summary.read += chunk.rows.count
                    summary.inserted += try await postgres.importRows(table, chunk)
                    cursor = chunk.next
                } while cursor != nil
                progress(summary)
                summaries.append(summary)
            }
            return summaries
        }
    }
}
