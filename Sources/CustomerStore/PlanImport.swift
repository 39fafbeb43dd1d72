import CustomerDomain
import Foundation
import GRDB

/// What `importPlans` changed, by plan id.
public struct PlanImportSummary: Sendable, Hashable {
    /// Plans of the file, new or overwritten.
    public var imported: [String]
    /// Plans gone from the file but referenced by subscriptions: kept with status `archived`.
    public var archived: [String]
    /// Plans gone from the file that nothing referenced.
    public var deleted: [String]
}

extension CustomerStore {
    /// Replaces a merchant's catalog in one transaction. Throws `merchantNotFound`.
    @discardableResult
    public func importPlans(merchantID: String, catalog: PlanCatalog) async throws -> PlanImportSummary {
        try await write("import plans") { db in
            try Self.requireMerchant(merchantID, db: db)
            let existing = try String.fetchSet(db, sql: "SELECT id FROM plans WHERE merchant_id = ?", arguments: [merchantID])
            let referenced = try String.fetchSet(
                db, sql: "SELECT DISTINCT plan_id FROM subscriptions WHERE merchant_id = ?", arguments: [merchantID])
            // Clear the old default first: at most one default per merchant is enforced by an index.
            try db.execute(sql: "UPDATE plans SET is_default = 0 WHERE merchant_id = ?", arguments: [merchantID])
            for plan in catalog.plans {
                try PlanRows.upsert(plan, merchantID: merchantID, db: db)
            }
            let removed = existing.subtracting(catalog.plans.map(\.plan.id)).sorted()
            var summary = PlanImportSummary(imported: catalog.plans.map(\.plan.id), archived: [], deleted: [])
            for id in removed {
                if referenced.contains(id) {
                    try db.execute(
                        sql: "UPDATE plans SET status = 'archived' WHERE merchant_id = ? AND id = ?", arguments: [merchantID, id])
                    summary.archived.append(id)
                } else {
                    try db.execute(sql: "DELETE FROM plans WHERE merchant_id = ? AND id = ?", arguments: [merchantID, id])
                    summary.deleted.append(id)
                }
            }
            return summary
        }
    }

    /// The merchant's plans, archived ones included, by id.
    public func plans(merchantID: String) async throws -> [CatalogPlan] {
        try await read("list plans") { db in try PlanRows.all(merchantID: merchantID, db: db) }
    }
}
