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
    public static func evaluate(
        defaultPlan: Plan?, for command: CreateCustomerCommand, isEligibleForTrial: Bool, now: Date
    ) -> DefaultPlanDecision {
        guard let plan = defaultPlan, plan.status == .available else {
            return DefaultPlanDecision(result: DefaultPlanResult(outcome: .noDefaultPlan), plan: nil, terms: nil)
        }
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
        let terms = SubscriptionTerms(
            status: isScheduled ? .pendingActivation : .active,
            isTrial: isTrial,
            startDate: start,
            endDate: isTrial ? start.adding(days: plan.trialDays) : nil,
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
