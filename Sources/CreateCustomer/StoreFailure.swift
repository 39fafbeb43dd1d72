import CustomerDomain

/// What a failure of the store means for the commands in hand: the one error taxonomy. Each
/// adapter maps its own codes to it in one table (`CustomerStore.failureTable`,
/// `PostgresStoreError.failureTable`); the worker acts on the class only. docs/operations.md
/// lists both tables.
public enum StoreFailureClass: String, Sendable, Hashable, CaseIterable {
    /// The database is unavailable or refusing work (unreachable, busy, full, read-only, I/O, a
    /// privilege or a table missing, a timeout): every command would fail the same way, so the
    /// worker pauses and retries and never blames the commands.
    case unavailable
    /// Two transactions collided (deadlock, serialization failure): run the batch again.
    case conflict
    /// This command's own fault (a constraint, a value out of range, a stored plan no import
    /// accepts): it is answered or dead-lettered alone.
    case command
    /// Nobody classified it. The worker pauses as for `unavailable`, logging the code at error
    /// level: an unknown error never dead-letters a stream of good commands.
    case unknown
}

/// A classified failure: its class and the code that decided it (an SQLite result code, a
/// SQLSTATE, or a kind of error), for logs and metrics.
public struct StoreFailure: Sendable, Hashable, CustomStringConvertible {
    public var kind: StoreFailureClass
    public var code: String

    public init(_ kind: StoreFailureClass, code: String) {
        self.kind = kind
        self.code = code
    }

    public var description: String { "\(kind.rawValue) (\(code))" }
}

/// An error that is one command's own fault whatever the store: adapters pass it through
/// unchanged, and it classifies as `.command`.
public protocol CommandFault: Error {}

extension PlanOutOfRange: CommandFault {}

extension StoreFailure {
    /// `.command` for a `CommandFault` (every adapter's table starts with this), else nil.
    public static func commandFault(_ error: any Error) -> StoreFailure? {
        error is any CommandFault ? StoreFailure(.command, code: String(describing: type(of: error))) : nil
    }
}
