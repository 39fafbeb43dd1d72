import CreateCustomer

extension CustomerStore {
    /// SQLite's primary result codes and what they mean for the commands (the extended code's low
    /// byte is the primary one). A code not listed is `.unknown`: the worker pauses and logs it.
    public static let failureTable: [Int32: (name: String, kind: StoreFailureClass)] = [
        5: ("SQLITE_BUSY", .unavailable),        // another connection held the lock past the busy timeout
        6: ("SQLITE_LOCKED", .unavailable),
        7: ("SQLITE_NOMEM", .unavailable),
        8: ("SQLITE_READONLY", .unavailable),    // the file or its folder cannot be written
        9: ("SQLITE_INTERRUPT", .unavailable),
        10: ("SQLITE_IOERR", .unavailable),
        11: ("SQLITE_CORRUPT", .unavailable),
        13: ("SQLITE_FULL", .unavailable),       // the disk is full
        14: ("SQLITE_CANTOPEN", .unavailable),
        15: ("SQLITE_PROTOCOL", .unavailable),
        26: ("SQLITE_NOTADB", .unavailable),
        18: ("SQLITE_TOOBIG", .command),         // a value of this command is too large
        19: ("SQLITE_CONSTRAINT", .command),     // a constraint this command's row breaks
        20: ("SQLITE_MISMATCH", .command),
        25: ("SQLITE_RANGE", .command),
        // SQLITE_ERROR (1) is a plain SQL mistake or a schema that is not what the worker expects
        // (a table or column missing): nothing a command did, nothing retrying a command fixes.
        1: ("SQLITE_ERROR", .unknown),
    ]

    public func classify(_ error: any Error) -> StoreFailure {
        Self.classify(error)
    }

    public static func classify(_ error: any Error) -> StoreFailure {
        if let fault = StoreFailure.commandFault(error) { return fault }
        switch error as? CustomerStoreError {
        case .database(_, _, let code, _):
            let primary = code & 0xFF
            let entry = failureTable[primary]
            return StoreFailure(entry?.kind ?? .unknown, code: "\(entry?.name ?? "SQLite \(primary)") (\(code))")
        case .cannotCreateDirectory:
            return StoreFailure(.unavailable, code: "cannot create the database directory")
        case .cancelled:
            return StoreFailure(.unavailable, code: "cancelled")
        case .unexpected, nil:
            return StoreFailure(.unknown, code: String(describing: type(of: error)))
        }
    }
}
