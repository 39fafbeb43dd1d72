import GRDB

/// Everything the store throws. Admin operations throw the specific cases; `handle` throws only
/// `database`, `cancelled` and `unexpected`, after which nothing of the batch was committed.
public enum CustomerStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case cannotCreateDirectory(path: String, reason: String)
    /// SQLite failed; `code` is the extended result code (5 = SQLITE_BUSY, 13 = SQLITE_FULL, …).
    case database(operation: String, path: String, code: Int32, message: String)
    case merchantNotFound(String)
    case apiKeyNotFound(String)
    case invalidArgument(String)
    case cancelled(operation: String)
    case unexpected(operation: String, description: String)

    public var description: String {
        switch self {
        case .cannotCreateDirectory(let path, let reason):
            "cannot create the database directory \(path): \(reason)"
        case .database(let operation, let path, let code, let message):
            "\(operation) failed on \(path): SQLite error \(code): \(message)"
        case .merchantNotFound(let id):
            "no merchant has the id \(id)"
        case .apiKeyNotFound(let reference):
            "no API key matches \(reference)"
        case .invalidArgument(let message):
            message
        case .cancelled(let operation):
            "\(operation) was cancelled"
        case .unexpected(let operation, let description):
            "\(operation) failed: \(description)"
        }
    }

    /// SQLITE_BUSY or SQLITE_LOCKED: another connection held the lock past the busy timeout.
    public var isBusy: Bool {
        guard case .database(_, _, let code, _) = self else { return false }
        return code & 0xFF == 5 || code & 0xFF == 6
    }

    static func wrapping(_ error: any Error, operation: String, path: String) -> CustomerStoreError {
        switch error {
        case let error as CustomerStoreError:
            error
        case let error as DatabaseError:
            .database(
                operation: operation, path: path, code: error.extendedResultCode.rawValue,
                message: error.message ?? "\(error)")
        case is CancellationError:
            .cancelled(operation: operation)
        default:
            .unexpected(operation: operation, description: String(describing: error))
        }
    }
}
