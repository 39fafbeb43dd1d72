@testable import CustomerDomain
import Foundation
import Testing

/// Numbers a catalog may hold, and date arithmetic that reports instead of trapping.
@Suite("Bounded numbers")
struct BoundsTests {
    private func issues(_ overrides: [String: String?]) -> [String] {
        switch PlanCatalog.parse(Array(#"{"plans":[\#(planJSON(overrides))]}"#.utf8)) {
        case .success: []
        case .failure(let error): error.issues.map(\.description)
        }
    }

    @Test func aHugeTrialIsRefusedWithItsFieldAndRange() {
        #expect(issues(["trialDays": "99999999999"]) == ["plans[0].trialDays: must be a whole number of days in 0...730"])
        #expect(issues(["trialDays": "731"]).count == 1)
        #expect(issues(["trialDays": "730"]).isEmpty)
        #expect(issues(["trialDays": "1e300"]).count == 1)
    }

    @Test func aHugePriceIsRefusedWithItsFieldAndRange() {
        #expect(issues(["price": "1000000001"]) == ["plans[0].price: must be a whole number of cents in 0...1000000000"])
        #expect(issues(["price": "1000000000"]).isEmpty)
        #expect(issues(["price": "-1"]) == ["plans[0].price: must be a whole number of cents in 0...1000000000"])
    }

    @Test func availableFromBefore1970IsRefused() {
        #expect(issues(["availableFrom": #""1969-12-31T23:59:59.999Z""#]).first?.hasPrefix("plans[0].availableFrom: must be between") == true)
        #expect(issues(["availableFrom": #""9999-12-31T23:59:59.999Z""#]).isEmpty)
    }

    @Test func addingDaysIsChecked() {
        let now = Timestamp(millisecondsSince1970: 1_700_000_000_000)
        #expect(now.adding(days: 1)?.millisecondsSince1970 == 1_700_086_400_000)
        #expect(now.adding(days: Int.max) == nil)
        #expect(now.adding(days: Int.min) == nil)
        #expect(now.adding(days: 107_000_000_000) == nil, "overflows Int64 milliseconds")
        #expect(Timestamp.validRange.upperBound.adding(days: 1) == nil)
        #expect(Timestamp.validRange.upperBound.iso8601 == "9999-12-31T23:59:59.999Z")
    }

    /// Whatever a database row holds, the rules answer with an error instead of trapping.
    @Test(arguments: [
        (Int.max, 900, "trialDays"), (731, 900, "trialDays"), (14, Int.max, "price"), (14, -5, "price"),
    ])
    func outOfRangeStoredPlansAreAnError(trialDays: Int, price: Int, field: String) {
        let plan = Plan(id: "bad", name: "Bad", price: price, billingCadence: .monthly, trialDays: trialDays)
        #expect {
            _ = try DefaultPlanRules.evaluate(defaultPlan: plan, for: CreateCustomerCommand(externalId: "e"), isEligibleForTrial: true, now: Date())
        } throws: { error in
            (error as? PlanOutOfRange)?.field == field && "\(error)".contains("plan bad")
        }
    }

    @Test func aTrialEndingAfterYear9999IsAnError() {
        let late = Timestamp(iso8601: "9999-12-30T00:00:00.000Z")
        let plan = Plan(id: "late", name: "Late", price: 900, billingCadence: .monthly, trialDays: 30, availableFrom: late)
        #expect(throws: PlanOutOfRange.self) {
            try DefaultPlanRules.evaluate(defaultPlan: plan, for: CreateCustomerCommand(externalId: "e"), isEligibleForTrial: true,
                                          now: Date(timeIntervalSince1970: 1_700_000_000))
        }
    }
}
