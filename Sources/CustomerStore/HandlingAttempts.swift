import Crypto
import CustomerDomain
import Foundation
import GRDB

/// Markers of commands whose handling started and has not finished.
///
/// A worker that dies while handling a command (whatever the cause) leaves its marker behind,
/// because the marker is committed before the work and removed in the same transaction as the
/// work. When the broker redelivers that command, the next worker finds the marker and knows this
/// command took a worker down: it dead-letters it instead of dying on it again, and its
/// batch-mates get their replies.
extension CustomerStore {
    /// The marker key of a command: SHA-256 of its `message_id` and body, hex.
    public static func attemptKey(messageID: String?, body: [UInt8]) -> String {
        var hash = SHA256()
        hash.update(data: Array((messageID ?? "").utf8) + [0])
        hash.update(data: body)
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }

    /// Records that handling `key` starts, and returns how many earlier attempts started and
    /// never finished (0 for a command seen for the first time).
    public func beginAttempt(key: String, now: Date) async throws -> Int {
        let millis = Timestamp(now).millisecondsSince1970
        return try await write("record a handling attempt") { db in
            let earlier = try Int.fetchOne(db, sql: "SELECT attempts FROM handling_attempts WHERE key = ?", arguments: [key]) ?? 0
            try db.execute(sql: """
                INSERT INTO handling_attempts (key, attempts, first_started_at, last_started_at) VALUES (?, 1, ?, ?)
                ON CONFLICT(key) DO UPDATE SET attempts = attempts + 1, last_started_at = excluded.last_started_at
                """, arguments: [key, millis, millis])
            return earlier
        }
    }

    /// Handles one command (as `handle` does) and removes its marker in the same transaction.
    public func handleAttempt(_ command: IncomingCommand, key: String, now: Date) async throws -> ReplyRecord {
        let parsed = CreateCustomerCommand.parse(body: command.body, contentType: command.contentType)
        let timestamp = Timestamp(now)
        return try await write("handle a command") { db in
            var batch = CommandBatch(db: db, now: timestamp)
            let reply = try batch.handle(command, parsed)
            try db.execute(sql: "DELETE FROM handling_attempts WHERE key = ?", arguments: [key])
            return reply
        }
    }

    /// Removes a marker: the command was dead-lettered, or given back for a reason of our own.
    public func clearAttempt(key: String) async throws {
        try await write("clear a handling attempt") { db in
            try db.execute(sql: "DELETE FROM handling_attempts WHERE key = ?", arguments: [key])
        }
    }

    /// Unfinished attempts recorded for `key` (0 when none).
    public func attempts(key: String) async throws -> Int {
        try await read("read a handling attempt") { db in
            try Int.fetchOne(db, sql: "SELECT attempts FROM handling_attempts WHERE key = ?", arguments: [key]) ?? 0
        }
    }

    static func registerHandlingAttempts(in migrator: inout DatabaseMigrator) {
        migrator.registerMigration("v2: handling attempts") { db in
            try db.execute(sql: """
                CREATE TABLE handling_attempts (
                    key TEXT PRIMARY KEY NOT NULL,        -- attemptKey(messageID:body:)
                    attempts INTEGER NOT NULL,            -- started and not finished
                    first_started_at INTEGER NOT NULL,
                    last_started_at INTEGER NOT NULL
                ) STRICT;
                """)
        }
    }
}
