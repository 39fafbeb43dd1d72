@testable import CustomerDomain
import Foundation
import Testing

struct DefaultPlanCase: Sendable, CustomTestStringConvertible {
    var name: String
    var plan: Plan?
    var billingCountry: String? = nil
    var stripeId: String? = nil
    var quickBooksId: String? = nil
    var eligibleForTrial = true
    var result: DefaultPlanResult
    var terms: SubscriptionTerms?
    var testDescription: String { name }
}

@Suite("Default plan rules")
struct DefaultPlanTests {
    static let now = Timestamp(iso8601: "2025-05-20T08:00:00.125Z")!
    static let future = Timestamp(iso8601: "2025-09-01T00:00:00.000Z")!
    static let past = Timestamp(iso8601: "2024-01-01T00:00:00.000Z")!

    static func plan(price: Int = 0, trialDays: Int = 0, countries: [String]? = nil, from: Timestamp? = nil,
                     status: PlanStatus = .available) -> Plan {
        Plan(id: "p", name: "P", price: price, billingCadence: .monthly, trialDays: trialDays, status: status,
             availableCountries: countries, availableFrom: from)
    }

    static func terms(_ status: SubscriptionStatus = .active, trial: Bool = false, start: Timestamp = now,
                      end: Timestamp? = nil, gateway: PaymentGateway? = nil) -> SubscriptionTerms {
        SubscriptionTerms(status: status, isTrial: trial, startDate: start, endDate: end, paymentGateway: gateway)
    }

    static let subscribed = DefaultPlanResult(outcome: .subscribed, planId: "p")
    static let trial = DefaultPlanResult(outcome: .trialStarted, planId: "p")
    static let scheduled = DefaultPlanResult(outcome: .scheduled, planId: "p")
    static let noPayment = DefaultPlanResult(outcome: .notEligible, planId: "p", reason: .paymentMethodRequired)
    static let noCountry = DefaultPlanResult(outcome: .notEligible, planId: "p", reason: .countryNotSupported)

    static let cases: [DefaultPlanCase] = [
        .init(name: "1 no default plan", plan: nil, result: DefaultPlanResult(outcome: .noDefaultPlan)),
        .init(name: "1 archived default", plan: plan(status: .archived), result: DefaultPlanResult(outcome: .noDefaultPlan)),
        .init(name: "2 country missing", plan: plan(countries: ["DE"]), result: noCountry),
        .init(name: "2 country not listed", plan: plan(countries: ["DE"]), billingCountry: "US", result: noCountry),
        .init(name: "2 country listed", plan: plan(countries: ["DE", "FR"]), billingCountry: "FR",
              result: subscribed, terms: terms()),
        .init(name: "3 free", plan: plan(), result: subscribed, terms: terms()),
        .init(name: "3 free ignores trial days and payment", plan: plan(trialDays: 30), stripeId: "cus_1",
              result: subscribed, terms: terms()),
        .init(name: "4 trial without payment", plan: plan(price: 4900, trialDays: 14),
              result: trial, terms: terms(trial: true, end: now.adding(days: 14))),
        .init(name: "4 trial keeps the gateway", plan: plan(price: 4900, trialDays: 14), quickBooksId: "qb",
              result: trial, terms: terms(trial: true, end: now.adding(days: 14), gateway: .quickBooks)),
        .init(name: "4 no trial when not eligible", plan: plan(price: 4900, trialDays: 14), stripeId: "cus_1",
              eligibleForTrial: false, result: subscribed, terms: terms(gateway: .stripe)),
        .init(name: "5 paid with Stripe", plan: plan(price: 900), stripeId: "cus_1",
              result: subscribed, terms: terms(gateway: .stripe)),
        .init(name: "5 paid with QuickBooks", plan: plan(price: 900), quickBooksId: "qb",
              result: subscribed, terms: terms(gateway: .quickBooks)),
        .init(name: "5 Stripe wins over QuickBooks", plan: plan(price: 900), stripeId: "cus_1", quickBooksId: "qb",
              result: subscribed, terms: terms(gateway: .stripe)),
        .init(name: "5 paid without payment", plan: plan(price: 900), result: noPayment),
        .init(name: "5 trial plan, not eligible, no payment", plan: plan(price: 900, trialDays: 7),
              eligibleForTrial: false, result: noPayment),
        .init(name: "6 scheduled free", plan: plan(from: future), result: scheduled,
              terms: terms(.pendingActivation, start: future)),
        .init(name: "6 scheduled trial", plan: plan(price: 900, trialDays: 7, from: future), result: scheduled,
              terms: terms(.pendingActivation, trial: true, start: future, end: future.adding(days: 7))),
        .init(name: "6 scheduled paid", plan: plan(price: 900, from: future), stripeId: "cus_1", result: scheduled,
              terms: terms(.pendingActivation, start: future, gateway: .stripe)),
        .init(name: "6 scheduled paid without payment", plan: plan(price: 900, from: future), result: noPayment),
        .init(name: "6 scheduled but country first", plan: plan(countries: ["DE"], from: future), result: noCountry),
        .init(name: "6 availableFrom in the past", plan: plan(from: past), result: subscribed, terms: terms()),
        .init(name: "6 availableFrom now is not future", plan: plan(from: now), result: subscribed, terms: terms()),
    ]

    @Test("rules in order", arguments: cases)
    func evaluate(_ testCase: DefaultPlanCase) throws {
        var command = CreateCustomerCommand(externalId: "e")
        command.billingCountry = testCase.billingCountry
        command.stripeId = testCase.stripeId
        command.quickBooksId = testCase.quickBooksId
        let decision = try DefaultPlanRules.evaluate(
            defaultPlan: testCase.plan, for: command, isEligibleForTrial: testCase.eligibleForTrial, now: Self.now.date)
        #expect(decision.result == testCase.result)
        #expect(decision.terms == testCase.terms)
        #expect((decision.plan != nil) == (testCase.terms != nil))
    }

    @Test func trialEligibility() {
        func subscription(price: Int, trial: Bool) -> Subscription {
            Subscription(id: "s", customerId: "c", merchantId: "m", plan: Self.plan(price: price),
                         terms: Self.terms(trial: trial), now: Self.now)
        }
        #expect(DefaultPlanRules.isEligibleForTrial(given: []))
        #expect(DefaultPlanRules.isEligibleForTrial(given: [subscription(price: 0, trial: false)]))
        #expect(!DefaultPlanRules.isEligibleForTrial(given: [subscription(price: 900, trial: false)]))
        #expect(!DefaultPlanRules.isEligibleForTrial(given: [subscription(price: 900, trial: true)]))
    }

    @Test func customerSortsSubscriptionsByStatus() {
        let active = Subscription(id: "a", customerId: "c", merchantId: "m", plan: Self.plan(),
                                  terms: Self.terms(), now: Self.now)
        let upcoming = Subscription(id: "u", customerId: "c", merchantId: "m", plan: Self.plan(),
                                    terms: Self.terms(.pendingActivation, start: Self.future), now: Self.now)
        let customer = Customer(id: "c", merchantId: "m", attributes: CreateCustomerCommand(externalId: "e"),
                                subscriptions: [active, upcoming], now: Self.now)
        #expect(customer.activeSubscriptions.map(\.id) == ["a"])
        #expect(customer.upcomingSubscriptions.map(\.id) == ["u"])
        #expect(customer.isEligibleForTrial)
    }
}
