import Foundation

public enum DefaultPlanOutcome: String, Codable, Sendable, CaseIterable {
    case subscribed
    case trialStarted = "trial_started"
    case scheduled
    case notEligible = "not_eligible"
    case noDefaultPlan = "no_default_plan"
}

public enum NotEligibleReason: String, Codable, Sendable, CaseIterable {
    case countryNotSupported = "country_not_supported"
    case paymentMethodRequired = "payment_method_required"
}

/// The `defaultPlan` object of a `CustomerCreated` reply.
public struct DefaultPlanResult: Codable, Sendable, Hashable, OrderedJSONObject {
    public var outcome: DefaultPlanOutcome
    public var planId: String?
    public var reason: NotEligibleReason?

    public init(outcome: DefaultPlanOutcome, planId: String? = nil, reason: NotEligibleReason? = nil) {
        self.outcome = outcome
        self.planId = planId
        self.reason = reason
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("outcome", outcome)
        try writer.write("planId", planId)
        try writer.write("reason", reason)
    }
}

/// The time-and-money part of a subscription the default plan grants, before it has ids.
public struct SubscriptionTerms: Sendable, Hashable {
    public var status: SubscriptionStatus
    public var isTrial: Bool
    public var startDate: Timestamp
    public var endDate: Timestamp?
    public var paymentGateway: PaymentGateway?
}

/// What the default-plan rules decided for a new customer.
public struct DefaultPlanDecision: Sendable, Hashable {
    public var result: DefaultPlanResult
    /// The plan subscribed to, when `terms` is set.
    public var plan: Plan?
    /// Nil when no subscription is created.
    public var terms: SubscriptionTerms?
}

/// "Automatically subscribes the customer to the default plan if eligible."
public enum DefaultPlanRules {
    /// Applies the contract's ordered rules: no default plan; country restriction; free plan; trial;
    /// paid plan needing a payment reference; and a future `availableFrom` turns any subscription
    /// into a scheduled one that starts then.
    ///
    /// Throws `PlanOutOfRange` when the stored plan holds numbers no catalog import accepts (a row
    /// written by hand or before the bounds existed) or its trial would end past year 9999: a
    /// clear error instead of an arithmetic trap.
    public static func evaluate(
        defaultPlan: Plan?, for command: CreateCustomerCommand, isEligibleForTrial: Bool, now: Date
    ) throws(PlanOutOfRange) -> DefaultPlanDecision {
        guard let plan = defaultPlan, plan.status == .available else {
            return DefaultPlanDecision(result: DefaultPlanResult(outcome: .noDefaultPlan), plan: nil, terms: nil)
        }
        try PlanOutOfRange.check(plan)
        if let countries = plan.availableCountries, !countries.contains(command.billingCountry ?? "") {
            return notEligible(plan, .countryNotSupported)
        }
        let gateway = paymentGateway(for: command)
        let isTrial = !plan.isFree && plan.trialDays > 0 && isEligibleForTrial
        if !plan.isFree && !isTrial && gateway == nil {
            return notEligible(plan, .paymentMethodRequired)
        }
        let nowStamp = Timestamp(now)
        let isScheduled = plan.availableFrom.map { $0 > nowStamp } ?? false
        let start = isScheduled ? plan.availableFrom ?? nowStamp : nowStamp
        var endDate: Timestamp?
        if isTrial {
            guard let end = start.adding(days: plan.trialDays) else {
                throw PlanOutOfRange(planID: plan.id, field: "trialDays", value: String(plan.trialDays),
                                     rule: "the trial would end after \(Timestamp.validRange.upperBound.iso8601)")
            }
            endDate = end
        }
        let terms = SubscriptionTerms(
            status: isScheduled ? .pendingActivation : .active,
            isTrial: isTrial,
            startDate: start,
            endDate: endDate,
            paymentGateway: plan.isFree ? nil : gateway)
        let outcome: DefaultPlanOutcome = isScheduled ? .scheduled : isTrial ? .trialStarted : .subscribed
        return DefaultPlanDecision(result: DefaultPlanResult(outcome: outcome, planId: plan.id), plan: plan, terms: terms)
    }

    /// Stripe wins when both references are present.
    public static func paymentGateway(for command: CreateCustomerCommand) -> PaymentGateway? {
        if command.stripeId != nil { return .stripe }
        if command.quickBooksId != nil { return .quickBooks }
        return nil
    }

    /// True only if none of the customer's subscriptions, past, current or upcoming, is paid or a
    /// trial: a free subscription keeps the trial.
    public static func isEligibleForTrial(given subscriptions: [Subscription]) -> Bool {
        !subscriptions.contains { $0.isTrial || !$0.plan.isFree }
    }

    private static func notEligible(_ plan: Plan, _ reason: NotEligibleReason) -> DefaultPlanDecision {
        DefaultPlanDecision(
            result: DefaultPlanResult(outcome: .notEligible, planId: plan.id, reason: reason), plan: nil, terms: nil)
    }
}

/// A stored plan whose numbers are outside what the rules can work with.
public struct PlanOutOfRange: Error, Sendable, Hashable, CustomStringConvertible {
    public var planID: String
    public var field: String
    public var value: String
    public var rule: String

    public var description: String { "plan \(planID): \(field) \(value) is out of range: \(rule)" }

    /// The bounds a catalog import enforces, checked again on what the database returned.
    static func check(_ plan: Plan) throws(PlanOutOfRange) {
        if !Plan.priceRange.contains(plan.price) {
            throw PlanOutOfRange(planID: plan.id, field: "price", value: String(plan.price),
                                 rule: "must be \(Plan.priceRange.lowerBound)...\(Plan.priceRange.upperBound) cents")
        }
        if !Plan.trialDaysRange.contains(plan.trialDays) {
            throw PlanOutOfRange(planID: plan.id, field: "trialDays", value: String(plan.trialDays),
                                 rule: "must be \(Plan.trialDaysRange.lowerBound)...\(Plan.trialDaysRange.upperBound) days")
        }
        if let from = plan.availableFrom, !Timestamp.validRange.contains(from) {
            throw PlanOutOfRange(planID: plan.id, field: "availableFrom", value: String(from.millisecondsSince1970),
                                 rule: "must be between \(Timestamp.validRange.lowerBound.iso8601) and \(Timestamp.validRange.upperBound.iso8601)")
        }
    }
}
