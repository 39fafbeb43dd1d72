@testable import CreateCustomer
import CustomerDomain
import Testing

/// The admin operations' rules, as pure values: what each reads, what it writes from the rows
/// read, and which rule it breaks; no database (the stores' tests run them for real).
@Suite("Admin operations (no database)")
struct AdministrationTests {
    static let now = Timestamp(millisecondsSince1970: 1_700_000_000_000)

    static func plan(_ id: String, isDefault: Bool = false) -> CatalogPlan {
        CatalogPlan(plan: Plan(id: id, name: id, price: 100, billingCadence: .monthly), isDefault: isDefault)
    }

    @Test func aMerchantNeedsANameAndGetsItsTwoKeysWithTheInjectedIds() throws {
        let secret = APIKeys.generate(.secret, merchantID: "m1")
        let publishable = APIKeys.generate(.publishable, merchantID: "m1")
        #expect(throws: AdministrationError.invalidArgument("the merchant name must not be empty")) {
            try CreateMerchant(name: "  ", merchantID: "m1", secret: secret, publishable: publishable, now: Self.now)
        }
        let operation = try CreateMerchant(name: " Shop ", merchantID: "m1", secret: secret, publishable: publishable, now: Self.now)
        let decision = operation.decide(AdminRows())
        #expect(decision.writes == [.insertMerchant(id: "m1", name: "Shop", now: Self.now), .insertAPIKey(secret.stored, now: Self.now),
                                    .insertAPIKey(publishable.stored, now: Self.now)])
        #expect(decision.answer == MerchantCredentials(merchantId: "m1", secretKey: secret.key, publishableKey: publishable.key))
    }

    @Test func aKeyIsCreatedOnlyForAMerchantThatExists() throws {
        let generated = APIKeys.generate(.secret, merchantID: "m1")
        let operation = CreateAPIKey(merchantID: "m1", generated: generated, now: Self.now)
        #expect(operation.reads.merchant == "m1")
        #expect(throws: AdministrationError.merchantNotFound("m1")) { try operation.decide(AdminRows(merchantExists: false)) }
        #expect(try operation.decide(AdminRows(merchantExists: true)).writes == [.insertAPIKey(generated.stored, now: Self.now)])
    }

    @Test func revokingNeedsAKeyOfTheTypeItsReferenceNames() throws {
        let generated = APIKeys.generate(.secret, merchantID: "m1")
        let id = generated.stored.id
        #expect(throws: AdministrationError.apiKeyNotFound("nope")) { try RevokeAPIKey(reference: "nope", now: Self.now) }
        let bySecretPrefix = try RevokeAPIKey(reference: "sk_" + id, now: Self.now)
        #expect(bySecretPrefix.reads.apiKeyIDs == [id])
        #expect(throws: AdministrationError.apiKeyNotFound("sk_" + id)) { try bySecretPrefix.decide(AdminRows()) }
        #expect(try bySecretPrefix.decide(AdminRows(apiKeys: [generated.stored])).writes == [.revokeAPIKey(id: id, now: Self.now)])
        let byPublishablePrefix = try RevokeAPIKey(reference: "pk_" + id, now: Self.now)
        #expect(throws: AdministrationError.apiKeyNotFound("pk_" + id)) { try byPublishablePrefix.decide(AdminRows(apiKeys: [generated.stored])) }
    }

    @Test func anImportArchivesReferencedPlansGoneFromTheCatalogAndDeletesTheOthers() throws {
        let operation = ImportPlans(merchantID: "m1", catalog: PlanCatalog(plans: [Self.plan("a", isDefault: true), Self.plan("b")]))
        #expect(operation.reads == AdminReads(apiKeyIDs: [], merchant: "m1", plansOf: "m1"))
        #expect(throws: AdministrationError.merchantNotFound("m1")) { try operation.decide(AdminRows()) }
        let rows = AdminRows(merchantExists: true, plans: [Self.plan("a"), Self.plan("c"), Self.plan("d")], referencedPlanIDs: ["c"])
        let decision = try operation.decide(rows)
        #expect(decision.answer == PlanImportSummary(imported: ["a", "b"], archived: ["c"], deleted: ["d"]))
        #expect(decision.writes == [.savePlans(merchantID: "m1", upserting: [Self.plan("a", isDefault: true), Self.plan("b")],
                                               archiving: ["c"], deleting: ["d"])])
    }
}
