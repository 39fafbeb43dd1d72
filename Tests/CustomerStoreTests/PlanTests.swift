import CustomerDomain
import BrokerTestSupport
import CreateCustomer
@testable import CustomerStore
import Foundation
import GRDB
import Testing

func planEntry(_ id: String, price: Int = 0, trialDays: Int = 0, isDefault: Bool = false, extra: String = "") -> String {
    #"{"id":"\#(id)","name":"\#(id)","currency":"USD","price":\#(price),"billingCadence":"monthly","trialDays":\#(trialDays),"isPrivate":false,"status":"available","default":\#(isDefault)\#(extra)}"#
}

func catalogJSON(_ plans: String...) -> String {
    #"{"plans":[\#(plans.joined(separator: ","))]}"#
}

@Suite("Store: plans and the default plan", .closesResources)
struct PlanStoreTests {
    @Test(arguments: StoreKind.all)
    func importArchivesReferencedPlansAndDeletesTheRest(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(
                planEntry("free", isDefault: true), planEntry("pro", price: 900))))
            let created = try await store.handleOne(command(#"{"externalId":"c1"}"#, key: merchant.secretKey))
            #expect(try decodeCreated(created).defaultPlan == DefaultPlanResult(outcome: .subscribed, planId: "free"))

            let summary = try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(
                planEntry("team", price: 4900, trialDays: 14, isDefault: true))))
            #expect(summary == PlanImportSummary(imported: ["team"], archived: ["free"], deleted: ["pro"]))
            let plans = try await store.plans(merchantID: merchant.id)
            #expect(plans.map(\.plan.id) == ["free", "team"])
            #expect(plans.map(\.plan.status) == [.archived, .available])
            #expect(plans.map(\.isDefault) == [false, true])
            let subscriptions = try await store.strings("SELECT plan_id FROM subscriptions").map { $0[0] }
            #expect(subscriptions == ["free"])

            // Re-importing an archived plan brings it back as the file says.
            try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(planEntry("free"))))
            #expect(try await store.plans(merchantID: merchant.id).map(\.plan.status) == [.available])
        }
    }

    @Test(arguments: StoreKind.all)
    func importRoundTripsEveryPlanField(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            let file = catalogJSON(
                planEntry("eu", price: 2700, trialDays: 14, extra: #","description":"EU","availableCountries":["DE","FR"],"availableFrom":"2030-01-01T00:00:00.000Z""#),
                planEntry("anywhere", extra: #","availableCountries":null"#))
            let imported = try catalog(file)
            try await store.importPlans(merchantID: merchant.id, catalog: imported)
            let stored = try await store.plans(merchantID: merchant.id)
            #expect(stored == imported.plans.sorted { $0.plan.id < $1.plan.id })
        }
    }

    @Test(arguments: StoreKind.all)
    func importNeedsAMerchant(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            await #expect(throws: AdministrationError.merchantNotFound("nobody")) {
                try await store.importPlans(merchantID: "nobody", catalog: PlanCatalog(plans: []))
            }
        }
    }

    @Test(arguments: StoreKind.all)
    func trialStartsWithAnActiveTrialSubscription(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(
                planEntry("team", price: 4900, trialDays: 14, isDefault: true))))
            let reply = try decodeCreated(try await store.handleOne(command(#"{"externalId":"t1"}"#, key: merchant.secretKey)))
            #expect(reply.defaultPlan == DefaultPlanResult(outcome: .trialStarted, planId: "team"))
            let subscription = try #require(reply.customer.activeSubscriptions.first)
            #expect(subscription.isTrial)
            #expect(subscription.status == .active)
            #expect(subscription.startDate == Timestamp(now))
            #expect(subscription.endDate == Timestamp(now).adding(days: 14))
            #expect(subscription.customerId == reply.customer.id)
            #expect(subscription.plan.id == "team")
            #expect(!reply.customer.isEligibleForTrial)
            let row = try await store.strings("SELECT customer_id, CAST(end_date AS TEXT) FROM subscriptions").first.map {
                (customerID: $0[0], endDate: $0[1].flatMap { Int64($0) })
            }
            #expect(row?.customerID == reply.customer.id)
            #expect(row?.endDate == Timestamp(now).adding(days: 14)?.millisecondsSince1970)
        }
    }

    /// One batch, two merchants: columns NULL for one row and set for the other, in every table
    /// (PostgreSQL writes a batch as one array per column, so NULLs travel inside the arrays).
    @Test(arguments: StoreKind.all)
    func aMixedBatchStoresEachRowsValuesAndNulls(_ kind: StoreKind) async throws {
        try await withStore(kind) { store, _ in
            let trial = try await Merchant(store, name: "Trial")
            let free = try await Merchant(store, name: "Free")
            try await store.importPlans(merchantID: trial.id, catalog: catalog(catalogJSON(
                planEntry("team", price: 4900, trialDays: 14, isDefault: true))))
            try await store.importPlans(merchantID: free.id, catalog: catalog(catalogJSON(planEntry("free", isDefault: true))))
            let replies = try await store.handle([
                command(#"{"externalId":"a","name":"Ada","stripeId":"cus_s"}"#, key: trial.secretKey),
                command(#"{"externalId":"b","email":"b@example.com"}"#, key: free.secretKey),
            ], now: now)
            #expect(replies.map(\.type) == [.customerCreated, .customerCreated])
            let customers = try await store.strings("""
                SELECT external_id, name, email, stripe_id, CAST(created_at AS TEXT), CAST(updated_at AS TEXT)
                FROM customers ORDER BY external_id
                """)
            let created = "\(Timestamp(now).millisecondsSince1970)"
            #expect(customers == [["a", "Ada", nil, "cus_s", created, created], ["b", nil, "b@example.com", nil, created, created]])
            let subscriptions = try await store.strings("""
                SELECT c.external_id, s.plan_id, CAST(s.end_date AS TEXT), s.payment_gateway
                FROM subscriptions s JOIN customers c ON c.id = s.customer_id ORDER BY c.external_id
                """)
            let trialEnd = try #require(Timestamp(now).adding(days: 14)?.millisecondsSince1970)
            #expect(subscriptions == [["a", "team", "\(trialEnd)", "Stripe"], ["b", "free", nil, nil]])
            let records = try await store.strings("""
                SELECT c.external_id, p.idempotency_key FROM processed_requests p JOIN customers c ON c.id = p.customer_id
                ORDER BY c.external_id
                """)
            #expect(records == [["a", replies[0].idempotencyKey], ["b", replies[1].idempotencyKey]])
            // Both replay from what was stored.
            let again = try await store.handle([
                command(#"{"externalId":"b","email":"b@example.com"}"#, key: free.secretKey),
                command(#"{"externalId":"a","name":"Ada","stripeId":"cus_s"}"#, key: trial.secretKey),
            ], now: now)
            #expect(again.map(\.replayed) == [true, true] && again[0].body == replies[1].body && again[1].body == replies[0].body)
        }
    }

    static let outcomeCases: [(String, String, DefaultPlanOutcome)] = [
        (planEntry("p", price: 900, isDefault: true), #"{"externalId":"x","stripeId":"cus_1"}"#, DefaultPlanOutcome.subscribed),
        (planEntry("p", price: 900, isDefault: true), #"{"externalId":"x"}"#, .notEligible),
        (planEntry("p", isDefault: true, extra: #","availableCountries":["DE"]"#), #"{"externalId":"x","billingCountry":"US"}"#, .notEligible),
        (planEntry("p", isDefault: true, extra: #","availableFrom":"2030-01-01T00:00:00.000Z""#), #"{"externalId":"x"}"#, .scheduled),
        (planEntry("p"), #"{"externalId":"x"}"#, .noDefaultPlan),
    ]

    @Test("outcomes through the store", arguments: StoreKind.all, outcomeCases)
    func outcome(_ kind: StoreKind, _ outcomeCase: (String, String, DefaultPlanOutcome)) async throws {
        let (plan, body, expected) = outcomeCase
        try await withStore(kind) { store, _ in
            let merchant = try await Merchant(store)
            try await store.importPlans(merchantID: merchant.id, catalog: catalog(catalogJSON(plan)))
            let reply = try decodeCreated(try await store.handleOne(command(body, key: merchant.secretKey), test: "outcome\(expected.rawValue)"))
            #expect(reply.defaultPlan.outcome == expected)
            let subscriptions = reply.customer.activeSubscriptions + reply.customer.upcomingSubscriptions
            #expect(subscriptions.count == ([.subscribed, .scheduled, .trialStarted].contains(expected) ? 1 : 0))
            if expected == .scheduled {
                #expect(reply.customer.upcomingSubscriptions.first?.status == .pendingActivation)
            }
        }
    }
}
