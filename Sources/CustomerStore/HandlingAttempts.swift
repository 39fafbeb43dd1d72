import CreateCustomer
import CustomerDomain
import GRDB

/// The table behind `HandlingAttempt` markers (the rule lives in `CreateCustomer`).
enum HandlingAttemptRows {
    static func delete(key: String, _ db: Database) throws {
        try db.execute(sql: "DELETE FROM handling_attempts WHERE key = ?", arguments: [key])
    }
}

extension CustomerStore {
    public func beginAttempt(key: String, now: Timestamp, since: Timestamp) async throws -> Int {
        let (millis, cutoff) = (now.millisecondsSince1970, since.millisecondsSince1970)
        return try await write("record a handling attempt") { db in
            // A marker older than the cutoff is expired: it counts again from one.
            let attempts = try Int.fetchOne(db, sql: """
                INSERT INTO handling_attempts (key, attempts, first_started_at, last_started_at) VALUES (?, 1, ?, ?)
                ON CONFLICT(key) DO UPDATE SET
                    attempts = CASE WHEN last_started_at < ? THEN 1 ELSE attempts + 1 END,
                    first_started_at = CASE WHEN last_started_at < ? THEN excluded.first_started_at ELSE first_started_at END,
                    last_started_at = excluded.last_started_at
                RETURNING attempts
                """, arguments: [key, millis, millis, cutoff, cutoff]) ?? 1
            try db.execute(sql: "DELETE FROM handling_attempts WHERE last_started_at < ?", arguments: [cutoff])
            return attempts - 1
        }
    }

    public func clearAttempt(key: String) async throws {
        try await write("clear a handling attempt") { try HandlingAttemptRows.delete(key: key, $0) }
    }

    static func registerHandlingAttempts(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2: handling attempts") { db in
            try db.execute(sql: """
                CREATE TABLE handling_attempts (
                    key TEXT PRIMARY KEY NOT NULL,        -- HandlingAttempt.key(messageID:body:)
                    attempts INTEGER NOT NULL,            -- started and not finished
                    first_started_at INTEGER NOT NULL,
                    last_started_at INTEGER NOT NULL
                ) STRICT;
                """)
        }
    }
}
