/// How hard SQLite works to keep a committed transaction through a power loss
/// (`PRAGMA synchronous`, in WAL mode).
public enum SynchronousMode: String, Sendable, CaseIterable {
    /// One fsync of the write-ahead log per commit: a committed (and so acknowledged) customer
    /// survives a power loss or kernel crash. The default.
    case full
    /// No fsync at commit, only at checkpoints: an application crash loses nothing, but a power
    /// loss or kernel crash can lose the last transactions, whose commands were already
    /// acknowledged: their customers vanish, and a retry by the sender creates new ids.
    case normal

    var pragma: String { "PRAGMA synchronous = \(rawValue.uppercased())" }
}
