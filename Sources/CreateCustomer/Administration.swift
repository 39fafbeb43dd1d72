import CustomerDomain
import Foundation

/// What operators do through the CLI: merchants, API keys and plan catalogs. The rules live here,
/// as pure operations (`AdminOperation`): what to read, then, from the rows read, what to write
/// and what to answer (or which rule is broken). A store runs one operation in one transaction of
/// its own kind (`CustomerStorage.administer`): the reads, the decision, the writes.
extension CustomerStorage {
    /// Creates a merchant with one secret and one publishable key.
    public func createMerchant(name: String, now: Date = Date()) async throws -> MerchantCredentials {
        let merchantID = newIdentifier()
        return try await administer(try CreateMerchant(
            name: name, merchantID: merchantID, secret: APIKeys.generate(.secret, merchantID: merchantID),
            publishable: APIKeys.generate(.publishable, merchantID: merchantID), now: Timestamp(now)))
    }

    /// Creates another key for a merchant; throws `merchantNotFound`.
    public func createAPIKey(merchantID: String, type: APIKeyType, now: Date = Date()) async throws -> String {
        try await administer(CreateAPIKey(merchantID: merchantID, generated: APIKeys.generate(type, merchantID: merchantID), now: Timestamp(now)))
    }

    /// Revokes the key named by its id, its `sk_<id>`/`pk_<id>` prefix or the whole key, and returns
    /// the key id. Revoking a revoked key keeps the first revocation time. Throws `apiKeyNotFound`.
    @discardableResult
    public func revokeAPIKey(_ reference: String, now: Date = Date()) async throws -> String {
        try await administer(try RevokeAPIKey(reference: reference, now: Timestamp(now)))
    }

    public func authenticate(apiKey: String?) async throws -> Authentication {
        guard let apiKey, !apiKey.isEmpty else { return .unauthorized(.missing) }
        guard let (keyID, _) = APIKeys.keyID(from: apiKey) else { return .unauthorized(.unknown) }
        return try await administer(Authenticate(apiKey: apiKey, keyID: keyID))
    }

    /// Replaces a merchant's catalog in one transaction: plans gone from the catalog are archived
    /// when subscriptions reference them and deleted otherwise. Throws `merchantNotFound`.
    @discardableResult
    public func importPlans(merchantID: String, catalog: PlanCatalog) async throws -> PlanImportSummary {
        try await administer(ImportPlans(merchantID: merchantID, catalog: catalog))
    }

    /// The merchant's plans, archived ones included, by id.
    public func plans(merchantID: String) async throws -> [CatalogPlan] {
        try await administer(ListPlans(merchantID: merchantID))
    }
}

/// An admin operation, pure: the rows it reads, then, from them, its writes and its answer (or
/// a broken rule, thrown as `AdministrationError`: nothing is written then).
public protocol AdminOperation: Sendable {
    associatedtype Answer: Sendable
    /// For errors and logs.
    var operation: String { get }
    var reads: AdminReads { get }
    func decide(_ rows: AdminRows) throws(AdministrationError) -> AdminDecision<Answer>
}

/// What an admin operation reads, each at most once, before it decides.
public struct AdminReads: Sendable, Hashable {
    /// Stored keys by key id.
    public var apiKeyIDs: [String] = []
    /// Whether this merchant exists.
    public var merchant: String?
    /// This merchant's plans, and the ids of those subscriptions reference.
    public var plansOf: String?
}

/// The rows read for `AdminReads`.
public struct AdminRows: Sendable {
    public var apiKeys: [StoredAPIKey] = []
    public var merchantExists = false
    public var plans: [CatalogPlan] = []
    public var referencedPlanIDs: Set<String> = []

    public init(apiKeys: [StoredAPIKey] = [], merchantExists: Bool = false, plans: [CatalogPlan] = [], referencedPlanIDs: Set<String> = []) {
        self.apiKeys = apiKeys
        self.merchantExists = merchantExists
        self.plans = plans
        self.referencedPlanIDs = referencedPlanIDs
    }
}

/// A row change an admin operation asks for, in order.
public enum AdminWrite: Sendable, Hashable {
    case insertMerchant(id: String, name: String, now: Timestamp)
    case insertAPIKey(StoredAPIKey, now: Timestamp)
    /// Sets the revocation time unless already revoked.
    case revokeAPIKey(id: String, now: Timestamp)
    /// Inserts or overwrites `upserting` (after clearing the old default), marks `archiving`
    /// archived and deletes `deleting`.
    case savePlans(merchantID: String, upserting: [CatalogPlan], archiving: [String], deleting: [String])
}

public struct AdminDecision<Answer: Sendable>: Sendable {
    public var writes: [AdminWrite]
    public var answer: Answer
}

struct CreateMerchant: AdminOperation {
    let name: String
    let merchantID: String
    let secret: (stored: StoredAPIKey, key: String)
    let publishable: (stored: StoredAPIKey, key: String)
    let now: Timestamp

    init(name: String, merchantID: String, secret: (stored: StoredAPIKey, key: String), publishable: (stored: StoredAPIKey, key: String),
         now: Timestamp) throws(AdministrationError) {
        self.name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !self.name.isEmpty else { throw AdministrationError.invalidArgument("the merchant name must not be empty") }
        (self.merchantID, self.secret, self.publishable, self.now) = (merchantID, secret, publishable, now)
    }

    var operation: String { "create merchant" }
    var reads: AdminReads { AdminReads(apiKeyIDs: [], merchant: nil, plansOf: nil) }

    func decide(_ rows: AdminRows) -> AdminDecision<MerchantCredentials> {
        AdminDecision(
            writes: [.insertMerchant(id: merchantID, name: name, now: now), .insertAPIKey(secret.stored, now: now),
                     .insertAPIKey(publishable.stored, now: now)],
            answer: MerchantCredentials(merchantId: merchantID, secretKey: secret.key, publishableKey: publishable.key))
    }
}

struct CreateAPIKey: AdminOperation {
    let merchantID: String
    let generated: (stored: StoredAPIKey, key: String)
    let now: Timestamp
    var operation: String { "create API key" }
    var reads: AdminReads { AdminReads(apiKeyIDs: [], merchant: merchantID, plansOf: nil) }

    func decide(_ rows: AdminRows) throws(AdministrationError) -> AdminDecision<String> {
        guard rows.merchantExists else { throw .merchantNotFound(merchantID) }
        return AdminDecision(writes: [.insertAPIKey(generated.stored, now: now)], answer: generated.key)
    }
}

struct RevokeAPIKey: AdminOperation {
    let reference: String
    let keyID: String
    let type: APIKeyType?
    let now: Timestamp
    var operation: String { "revoke API key" }
    var reads: AdminReads { AdminReads(apiKeyIDs: [keyID], merchant: nil, plansOf: nil) }

    init(reference: String, now: Timestamp) throws(AdministrationError) {
        guard let (keyID, type) = APIKeys.keyID(from: reference) else { throw .apiKeyNotFound(reference) }
        (self.reference, self.keyID, self.type, self.now) = (reference, keyID, type, now)
    }

    func decide(_ rows: AdminRows) throws(AdministrationError) -> AdminDecision<String> {
        guard let stored = rows.apiKeys.first(where: { $0.id == keyID }), type.map({ $0 == stored.type }) ?? true else {
            throw .apiKeyNotFound(reference)
        }
        return AdminDecision(writes: [.revokeAPIKey(id: keyID, now: now)], answer: keyID)
    }
}

struct Authenticate: AdminOperation {
    let apiKey: String
    let keyID: String
    var operation: String { "authenticate" }
    var reads: AdminReads { AdminReads(apiKeyIDs: [keyID], merchant: nil, plansOf: nil) }

    func decide(_ rows: AdminRows) -> AdminDecision<Authentication> {
        AdminDecision(writes: [], answer: APIKeys.authenticate(apiKey, stored: rows.apiKeys.first { $0.id == keyID }))
    }
}

struct ImportPlans: AdminOperation {
    let merchantID: String
    let catalog: PlanCatalog
    var operation: String { "import plans" }
    var reads: AdminReads { AdminReads(apiKeyIDs: [], merchant: merchantID, plansOf: merchantID) }

    func decide(_ rows: AdminRows) throws(AdministrationError) -> AdminDecision<PlanImportSummary> {
        guard rows.merchantExists else { throw .merchantNotFound(merchantID) }
        let removed = Set(rows.plans.map(\.plan.id)).subtracting(catalog.plans.map(\.plan.id)).sorted()
        let summary = PlanImportSummary(
            imported: catalog.plans.map(\.plan.id), archived: removed.filter(rows.referencedPlanIDs.contains),
            deleted: removed.filter { !rows.referencedPlanIDs.contains($0) })
        return AdminDecision(
            writes: [.savePlans(merchantID: merchantID, upserting: catalog.plans, archiving: summary.archived, deleting: summary.deleted)],
            answer: summary)
    }
}

struct ListPlans: AdminOperation {
    let merchantID: String
    var operation: String { "list plans" }
    var reads: AdminReads { AdminReads(apiKeyIDs: [], merchant: nil, plansOf: merchantID) }

    func decide(_ rows: AdminRows) -> AdminDecision<[CatalogPlan]> {
        AdminDecision(writes: [], answer: rows.plans)
    }
}

/// What `importPlans` changed, by plan id.
public struct PlanImportSummary: Sendable, Hashable {
    /// Plans of the file, new or overwritten.
    public var imported: [String]
    /// Plans gone from the file but referenced by subscriptions: kept with status `archived`.
    public var archived: [String]
    /// Plans gone from the file that nothing referenced.
    public var deleted: [String]

    public init(imported: [String], archived: [String], deleted: [String]) {
        self.imported = imported
        self.archived = archived
        self.deleted = deleted
    }
}
