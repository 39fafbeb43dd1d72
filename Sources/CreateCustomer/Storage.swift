import CustomerDomain

/// A database the create-customer use case and the admin operations run against: SQLite
/// (`CustomerStore`) or PostgreSQL (`PostgresStore`). Adapters hold no business rule: they read
/// and write rows, batch-wise (one statement of each kind per batch), inside one transaction.
public protocol CustomerStorage: Sendable {
    associatedtype Transaction: StorageTransaction

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    /// Errors are the adapter's own, with the context a user needs and no secret.
    func transaction<T: Sendable>(_ operation: String, _ body: @Sendable (Transaction) async throws -> T) async throws -> T

    /// True for a failure after which running the whole transaction again may succeed: a deadlock
    /// or a serialization failure between replicas. Never answered to a sender as an error.
    func isRetryable(_ error: any Error) -> Bool

    /// True when the database itself is unavailable (unreachable, busy past its timeout, full,
    /// read-only, I/O): every command would fail the same way, so the worker pauses and retries
    /// instead of blaming the commands. False for a failure a command causes by itself.
    func isOutage(_ error: any Error) -> Bool

    /// Applies pending schema migrations; safe when several processes start at once.
    func migrate() async throws

    /// Health check: a tiny write, which fails when the database cannot take writes.
    func checkWritable() async throws

    func customerCount() async throws -> Int

    /// Where the data lives, for messages (a file path, or a URL without its password).
    var location: String { get }
}

/// The statements of one transaction. Every method works on a whole batch at once.
public protocol StorageTransaction: Sendable {
    // MARK: Create customer

    /// The stored keys among `ids` (key ids, never whole keys).
    func apiKeys(ids: [String]) async throws -> [StoredAPIKey]
    /// The processed records among `keys` (idempotency keys).
    func processedRequests(keys: [String]) async throws -> [ProcessedRequest]
    /// Each merchant's default plan, when it has one that is available.
    func defaultPlans(merchantIDs: [String]) async throws -> [String: Plan]
    /// Inserts the customers in the order given and returns the ids of those inserted. A row whose
    /// merchant already has its `externalId` is skipped (the unique constraint is the final guard);
    /// when another transaction is inserting the same row, this waits for it to finish.
    func insertCustomers(_ customers: [NewCustomer]) async throws -> Set<String>
    func insertSubscriptions(_ subscriptions: [Subscription]) async throws
    func insertProcessedRequests(_ records: [ProcessedRequest], now: Timestamp) async throws
    /// The ids of existing customers.
    func customerIDs(_ references: [CustomerReference]) async throws -> [CustomerReference: String]

    // MARK: Handling attempts (`HandlingAttempt`)

    /// Counts one more started attempt at `key` and returns how many earlier ones never finished.
    func beginAttempt(key: String, now: Timestamp) async throws -> Int
    /// Removes the marker of `key`, if there is one.
    func deleteAttempt(key: String) async throws

    // MARK: Administration

    func merchantExists(_ id: String) async throws -> Bool
    func insertMerchant(id: String, name: String, now: Timestamp) async throws
    func insertAPIKey(_ key: StoredAPIKey, now: Timestamp) async throws
    /// Sets the revocation time unless already revoked; false when no key has this id (and type).
    func revokeAPIKey(id: String, type: APIKeyType?, now: Timestamp) async throws -> Bool
    /// The merchant's plans, by id.
    func plans(merchantID: String) async throws -> [CatalogPlan]
    /// Ids of the merchant's plans that subscriptions reference.
    func referencedPlanIDs(merchantID: String) async throws -> Set<String>
    /// Writes a catalog: inserts or overwrites `upserting` (after clearing the old default),
    /// marks `archiving` archived and deletes `deleting`.
    func savePlans(merchantID: String, upserting: [CatalogPlan], archiving: [String], deleting: [String]) async throws
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
