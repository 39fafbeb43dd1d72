import CreateCustomer

extension CustomerStore {
    public func isOutage(_ error: any Error) -> Bool {
        (error as? CustomerStoreError)?.isOutage ?? false
    }
}

extension CustomerStoreError {
    /// True when the database itself is unavailable (busy past the timeout, locked, full,
    /// read-only, I/O or open failures, a damaged file, a generic SQL error): every command would
    /// fail the same way, so the caller should pause and retry rather than blame the commands.
    /// False for failures a command causes by itself (a constraint, a value out of range, a
    /// non-database error such as a stored plan out of bounds): retrying it alone tells.
    public var isOutage: Bool {
        switch self {
        case .database(_, _, let code, _):
            // Primary result codes: ERROR 1, BUSY 5, LOCKED 6, NOMEM 7, READONLY 8, INTERRUPT 9,
            // IOERR 10, CORRUPT 11, FULL 13, CANTOPEN 14, PROTOCOL 15, NOTADB 26.
            [1, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 26].contains(code & 0xFF)
        case .cannotCreateDirectory:
            true
        case .cancelled, .unexpected:
            false
        }
    }
}
