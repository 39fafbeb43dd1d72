import CustomerDomain

/// A database the create-customer use case and the admin operations run against: SQLite
/// (`CustomerStore`) or PostgreSQL (`PostgresStore`). Adapters hold no business rule: they read
/// and write rows, batch-wise (one statement of each kind per batch), inside one transaction.
public protocol CustomerStorage: Sendable {
    /// Runs an admin operation in one transaction of the adapter's kind: its reads, its decision,
    /// its writes; committed when it answers, nothing written when it throws. Errors are the
    /// adapter's own (or the operation's `AdministrationError`), with context and no secret.
    func administer<Operation: AdminOperation>(_ operation: Operation) async throws -> Operation.Answer

    /// Drives `core` (started afresh) to its outcomes in one transaction, which first removes the
    /// handling-attempt markers `finishingAttempts` (so a marker's row is held by the transaction
    /// doing its work). Committed when it returns; nothing is when it throws.
    func createCustomers(_ core: CreateCustomerCore, finishingAttempts: [String]) async throws -> [CommandOutcome]

    /// Counts one more started attempt at `key` (committed at once) and returns how many earlier
    /// ones never finished and started after `since` (older markers expire).
    func beginAttempt(key: String, now: Timestamp, since: Timestamp) async throws -> Int

    /// Removes the marker of `key`, if there is one.
    func clearAttempt(key: String) async throws

    /// What a failure this store threw means (see `StoreFailureClass`): one table per adapter.
    func classify(_ error: any Error) -> StoreFailure

    /// Applies pending schema migrations; safe when several processes start at once.
    func migrate() async throws

    /// Health check: a tiny write, which fails when the database cannot take writes.
    func checkWritable() async throws

    func customerCount() async throws -> Int

    /// Where the data lives, for messages (a file path, or a URL without its password).
    var location: String { get }
}

/// A stored value an adapter cannot decode (a row written by hand, or by a newer version): an
/// error naming the column, never a silent default. The command that needed the row fails alone.
public struct UndecodableStoredValue: CommandFault, Sendable, Hashable, CustomStringConvertible {
    public var table: String
    public var column: String
    public var value: String

    public init(table: String, column: String, value: String) {
        self.table = table
        self.column = column
        self.value = value
    }

    public var description: String { "the stored value \(table).\(column) = '\(value.prefix(64))' is not one this worker knows" }

    /// The stored string `value` of `table.column` as `Value`; throws, naming the column, when no
    /// case has it (never a default: both stores decode their enumerations through this).
    public static func decode<Value: RawRepresentable>(_ value: String, as _: Value.Type = Value.self, table: String,
                                                       column: String) throws(UndecodableStoredValue) -> Value
        where Value.RawValue == String {
        guard let decoded = Value(rawValue: value) else { throw UndecodableStoredValue(table: table, column: column, value: value) }
        return decoded
    }
}

/// A rule of an admin operation was broken; the message says which.
public enum AdministrationError: Error, Sendable, Equatable, CustomStringConvertible {
    case merchantNotFound(String)
    case apiKeyNotFound(String)
    case invalidArgument(String)

    public var description: String {
        switch self {
        case .merchantNotFound(let id): "no merchant has the id \(id)"
        case .apiKeyNotFound(let reference): "no API key matches \(reference)"
        case .invalidArgument(let message): message
        }
    }
}
