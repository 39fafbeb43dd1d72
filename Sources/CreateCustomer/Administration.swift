import CustomerDomain
import Foundation

/// What operators do through the CLI: merchants, API keys and plan catalogs. The rules live here;
/// the storage only reads and writes rows.
extension CustomerStorage {
    /// Creates a merchant with one secret and one publishable key.
    public func createMerchant(name: String, now: Date = Date()) async throws -> MerchantCredentials {
        let name = name.trimmingCharacters(in: .whitespacesAndNewlines)
        guard !name.isEmpty else { throw AdministrationError.invalidArgument("the merchant name must not be empty") }
        let timestamp = Timestamp(now)
        return try await transaction("create merchant") { transaction in
            let merchantID = newIdentifier()
            try await transaction.insertMerchant(id: merchantID, name: name, now: timestamp)
            let secret = APIKeys.generate(.secret, merchantID: merchantID)
            let publishable = APIKeys.generate(.publishable, merchantID: merchantID)
            try await transaction.insertAPIKey(secret.stored, now: timestamp)
            try await transaction.insertAPIKey(publishable.stored, now: timestamp)
            return MerchantCredentials(merchantId: merchantID, secretKey: secret.key, publishableKey: publishable.key)
        }
    }

    /// Creates another key for a merchant; throws `merchantNotFound`.
    public func createAPIKey(merchantID: String, type: APIKeyType, now: Date = Date()) async throws -> String {
        let timestamp = Timestamp(now)
        return try await transaction("create API key") { transaction in
            try await Self.requireMerchant(merchantID, transaction)
            let generated = APIKeys.generate(type, merchantID: merchantID)
            try await transaction.insertAPIKey(generated.stored, now: timestamp)
            return generated.key
        }
    }

    /// Revokes the key named by its id, its `sk_<id>`/`pk_<id>` prefix or the whole key, and returns
    /// the key id. Revoking a revoked key keeps the first revocation time. Throws `apiKeyNotFound`.
    @discardableResult
    public func revokeAPIKey(_ reference: String, now: Date = Date()) async throws -> String {
        guard let (keyID, type) = APIKeys.keyID(from: reference) else { throw AdministrationError.apiKeyNotFound(reference) }
        let timestamp = Timestamp(now)
        return try await transaction("revoke API key") { transaction in
            guard try await transaction.revokeAPIKey(id: keyID, type: type, now: timestamp) else {
                throw AdministrationError.apiKeyNotFound(reference)
            }
            return keyID
        }
    }

    public func authenticate(apiKey: String?) async throws -> Authentication {
        guard let apiKey, !apiKey.isEmpty else { return .unauthorized(.missing) }
        guard let (keyID, _) = APIKeys.keyID(from: apiKey) else { return .unauthorized(.unknown) }
        let stored = try await transaction("authenticate") { try await $0.apiKeys(ids: [keyID]) }
        return APIKeys.authenticate(apiKey, stored: stored.first)
    }

    /// Replaces a merchant's catalog in one transaction: plans gone from the catalog are archived
    /// when subscriptions reference them and deleted otherwise. Throws `merchantNotFound`.
    @discardableResult
    public func importPlans(merchantID: String, catalog: PlanCatalog) async throws -> PlanImportSummary {
        try await transaction("import plans") { transaction in
            try await Self.requireMerchant(merchantID, transaction)
            let existing = Set(try await transaction.plans(merchantID: merchantID).map(\.plan.id))
            let referenced = try await transaction.referencedPlanIDs(merchantID: merchantID)
            let removed = existing.subtracting(catalog.plans.map(\.plan.id)).sorted()
            let summary = PlanImportSummary(
                imported: catalog.plans.map(\.plan.id), archived: removed.filter(referenced.contains),
                deleted: removed.filter { !referenced.contains($0) })
            try await transaction.savePlans(
                merchantID: merchantID, upserting: catalog.plans, archiving: summary.archived, deleting: summary.deleted)
            return summary
        }
    }

    /// The merchant's plans, archived ones included, by id.
    public func plans(merchantID: String) async throws -> [CatalogPlan] {
        try await transaction("list plans") { try await $0.plans(merchantID: merchantID) }
    }

    private static func requireMerchant(_ merchantID: String, _ transaction: Transaction) async throws {
        guard try await transaction.merchantExists(merchantID) else { throw AdministrationError.merchantNotFound(merchantID) }
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
