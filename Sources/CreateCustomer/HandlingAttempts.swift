import Crypto
import CustomerDomain
import Foundation

/// Markers of commands whose handling started and has not finished.
///
/// A redelivered command commits a marker before its work; the transaction doing the work removes
/// it first thing (so, while it runs, the marker's row is held by it, and another worker given
/// the same command by a connection blip waits for it instead of counting it as crashed). A
/// worker that dies while handling the command leaves the marker behind. The worker that finds
/// markers left behind by `HandlingAttempt.crashesBeforeDeadLetter` earlier attempts knows this
/// command takes workers down: it dead-letters it instead of dying on it again, and its
/// batch-mates get their replies. One marker left behind is not enough: an unrelated kill -9
/// (a deploy, the OOM killer) or a SIGTERM while the database was away leaves one too. Markers
/// expire after `lifetime`, and live in the shared database, so a replica on another host
/// recognises the command too.
public enum HandlingAttempt {
    /// Earlier attempts that must have died before a command counts as the cause.
    public static let crashesBeforeDeadLetter = 2

    /// How long a marker left behind counts.
    public static let lifetime: Duration = .seconds(3600)

    /// The marker key of a command: SHA-256 of the key id of its API key (which names the
    /// merchant; never the secret), its `message_id` and its body, hex.
    /// Markers outlive a deploy, so the key's bytes never change (a test pins one).
    public static func key(apiKey: String?, messageID: String?, body: [UInt8]) -> String {
        var hash = SHA256()
        hash.update(utf8Of: apiKey.flatMap { APIKeys.keyID(from: $0)?.id } ?? "")
        withUnsafeBytes(of: UInt8(0)) { hash.update(bufferPointer: $0) }
        hash.update(utf8Of: messageID ?? "")
        withUnsafeBytes(of: UInt8(0)) { hash.update(bufferPointer: $0) }
        hash.update(data: body)
        // `hexString`, not `String(format: "%02x")` per byte: that was ~50,000 instructions a
        // command (Foundation's format parser, 32 strings joined), for the same digits.
        return hash.finalize().hexString
    }
}

extension CustomerStorage {
    /// Records that handling `key` starts (committed at once), and returns how many earlier
    /// attempts started within `HandlingAttempt.lifetime` and never finished.
    public func beginAttempt(key: String, now: Date) async throws -> Int {
        let stamp = Timestamp(now)
        let since = Timestamp(now.addingTimeInterval(-TimeInterval(HandlingAttempt.lifetime.components.seconds)))
        return try await beginAttempt(key: key, now: stamp, since: since)
    }

    /// Handles one command (as `process` does) and removes its marker in the same transaction.
    public func handleAttempt(_ command: IncomingCommand, key: String, now: Date) async throws -> CommandOutcome {
        try await process([command], now: now, finishingAttempts: [key])[0]
    }
}
