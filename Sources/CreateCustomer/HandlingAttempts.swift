import Crypto
import CustomerDomain
import Foundation

/// Markers of commands whose handling started and has not finished.
///
/// A worker that dies while handling a command (whatever the cause) leaves its marker behind,
/// because the marker is committed before the work and removed in the same transaction as the
/// work. When the broker redelivers that command, the next worker finds the marker and knows this
/// command took a worker down: it dead-letters it instead of dying on it again, and its
/// batch-mates get their replies. The markers live in the shared database, so a replica on
/// another host recognises the command too.
public enum HandlingAttempt {
    /// The marker key of a command: SHA-256 of its `message_id` and body, hex.
    public static func key(messageID: String?, body: [UInt8]) -> String {
        var hash = SHA256()
        hash.update(data: Array((messageID ?? "").utf8) + [0])
        hash.update(data: body)
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }
}

extension CustomerStorage {
    /// Records that handling `key` starts (committed at once), and returns how many earlier
    /// attempts started and never finished (0 for a command seen for the first time).
    public func beginAttempt(key: String, now: Date) async throws -> Int {
        try await transaction("record a handling attempt") { try await $0.beginAttempt(key: key, now: Timestamp(now)) }
    }

    /// Handles one command (as `handle` does) and removes its marker in the same transaction.
    public func handleAttempt(_ command: IncomingCommand, key: String, now: Date) async throws -> ReplyRecord {
        try await handle([command], now: now, finishingAttempt: key)[0]
    }

    /// Removes a marker: the command was dead-lettered, or given back for a reason of our own.
    public func clearAttempt(key: String) async throws {
        try await transaction("clear a handling attempt") { try await $0.deleteAttempt(key: key) }
    }
}
