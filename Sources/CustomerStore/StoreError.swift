import CreateCustomer
import GRDB

/// Everything the SQLite store throws (besides the admin rules' `AdministrationError`, passed
/// through unchanged); after a failed transaction nothing of it was committed.
public enum CustomerStoreError: Error, Sendable, Equatable, CustomStringConvertible {
    case cannotCreateDirectory(path: String, reason: String)
    /// SQLite failed; `code` is the extended result code (5 = SQLITE_BUSY, 13 = SQLITE_FULL, …).
    case database(operation: String, path: String, code: Int32, message: String)
    case cancelled(operation: String)
    case unexpected(operation: String, description: String)

    public var description: String {
        switch self {
        case .cannotCreateDirectory(let path, let reason):
            "cannot create the database directory \(path): \(reason)"
        case .database(let operation, let path, let code, let message):
            "\(operation) failed on \(path): SQLite error \(code): \(message)"
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

    static func wrapping(_ error: any Error, operation: String, path: String) -> any Error {
        switch error {
        case let error as AdministrationError:
            error
        case let error as any CommandFault:
            error
        case let error as CustomerStoreError:
            error
        case let error as DatabaseError:
            CustomerStoreError.database(
                operation: operation, path: path, code: error.extendedResultCode.rawValue,
                message: error.message ?? "\(error)")
        case is CancellationError:
            CustomerStoreError.cancelled(operation: operation)
        default:
            CustomerStoreError.unexpected(operation: operation, description: String(describing: error))
        }
    }
}
