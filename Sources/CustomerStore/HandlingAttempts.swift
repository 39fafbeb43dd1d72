import CreateCustomer
import CustomerDomain
import GRDB

/// The table behind `HandlingAttempt` markers (the rule lives in `CreateCustomer`).
extension SQLiteTransaction {
    public func beginAttempt(key: String, now: Timestamp) async throws -> Int {
        let millis = now.millisecondsSince1970
        return try await access { db in
            let attempts = try Int.fetchOne(db, sql: """
                INSERT INTO handling_attempts (key, attempts, first_started_at, last_started_at) VALUES (?, 1, ?, ?)
                ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, last_started_at = excluded.last_started_at
                RETURNING attempts
                """, arguments: [key, millis, millis]) ?? 1
            return attempts - 1
        }
    }

    public func deleteAttempt(key: String) async throws {
        try await access { db in
            try db.execute(sql: "DELETE FROM handling_attempts WHERE key = ?", arguments: [key])
        }
    }
}

extension CustomerStore {
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
