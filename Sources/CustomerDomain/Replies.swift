public enum SubscriptionStatus: String, Codable, Sendable, CaseIterable {
    case pendingActivation, active, ended
}

public enum PaymentGateway: String, Codable, Sendable, CaseIterable {
    case stripe = "Stripe"
    case quickBooks = "QuickBooks"
}

public struct Subscription: Codable, Sendable, Hashable, OrderedJSONObject {
    public var id: String
    public var customerId: String
    public var merchantId: String
    public var planId: String
    public var status: SubscriptionStatus
    public var isTrial: Bool
    public var startDate: Timestamp
    public var endDate: Timestamp?
    public var paymentGateway: PaymentGateway?
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    /// The plan as it was when the subscription was created.
    public var plan: Plan

    /// A new subscription to `plan` on `terms`, created at `now`.
    public init(id: String, customerId: String, merchantId: String, plan: Plan, terms: SubscriptionTerms, now: Timestamp) {
        self.id = id
        self.customerId = customerId
        self.merchantId = merchantId
        self.planId = plan.id
        self.status = terms.status
        self.isTrial = terms.isTrial
        self.startDate = terms.startDate
        self.endDate = terms.endDate
        self.paymentGateway = terms.paymentGateway
        self.createdAt = now
        self.updatedAt = now
        self.plan = plan
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("id", id)
        try writer.write("customerId", customerId)
        try writer.write("merchantId", merchantId)
        try writer.write("planId", planId)
        try writer.write("status", status)
        try writer.write("isTrial", isTrial)
        try writer.write("startDate", startDate)
        try writer.write("endDate", endDate)
        try writer.write("paymentGateway", paymentGateway)
        try writer.write("createdAt", createdAt)
        try writer.write("updatedAt", updatedAt)
        try writer.write("plan", plan)
    }
}

public struct ConditionalBillableAccess: Codable, Sendable, Hashable, OrderedJSONObject {
    public var planId: String
    public var featureKey: String
    public var grantedUntil: Timestamp?

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("planId", planId)
        try writer.write("featureKey", featureKey)
        try writer.write("grantedUntil", grantedUntil)
    }
}

public struct CustomPricingUnit: Codable, Sendable, Hashable, OrderedJSONObject {
    public var planId: String
    public var unitName: String
    public var unitPrice: Int

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("planId", planId)
        try writer.write("unitName", unitName)
        try writer.write("unitPrice", unitPrice)
    }
}

/// The `customer` object of a `CustomerCreated` reply.
public struct Customer: Codable, Sendable, Hashable, OrderedJSONObject {
    public var id: String
    public var merchantId: String
    /// `externalId` and the sixteen optional fields, as the command gave them (normalised).
    public var attributes: CreateCustomerCommand
    public var createdAt: Timestamp
    public var updatedAt: Timestamp
    public var activeSubscriptions: [Subscription]
    public var upcomingSubscriptions: [Subscription]
    public var conditionalBillableAccess: [ConditionalBillableAccess]
    public var customPricingUnits: [CustomPricingUnit]
    public var privatePlans: [Plan]
    public var isEligibleForTrial: Bool

    /// A new customer with `subscriptions` sorted into active and upcoming ones.
    public init(id: String, merchantId: String, attributes: CreateCustomerCommand, subscriptions: [Subscription], now: Timestamp) {
        self.id = id
        self.merchantId = merchantId
        self.attributes = attributes
        self.createdAt = now
        self.updatedAt = now
        self.activeSubscriptions = subscriptions.filter { $0.status == .active }
        self.upcomingSubscriptions = subscriptions.filter { $0.status == .pendingActivation }
        self.conditionalBillableAccess = []
        self.customPricingUnits = []
        self.privatePlans = []
        self.isEligibleForTrial = DefaultPlanRules.isEligibleForTrial(given: subscriptions)
    }

    private enum CodingKeys: String, CodingKey {
        case id, merchantId, createdAt, updatedAt, activeSubscriptions, upcomingSubscriptions
        case conditionalBillableAccess, customPricingUnits, privatePlans, isEligibleForTrial
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        id = try container.decode(String.self, forKey: .id)
        merchantId = try container.decode(String.self, forKey: .merchantId)
        attributes = try CreateCustomerCommand(from: decoder)
        createdAt = try container.decode(Timestamp.self, forKey: .createdAt)
        updatedAt = try container.decode(Timestamp.self, forKey: .updatedAt)
        activeSubscriptions = try container.decode([Subscription].self, forKey: .activeSubscriptions)
        upcomingSubscriptions = try container.decode([Subscription].self, forKey: .upcomingSubscriptions)
        conditionalBillableAccess = try container.decode([ConditionalBillableAccess].self, forKey: .conditionalBillableAccess)
        customPricingUnits = try container.decode([CustomPricingUnit].self, forKey: .customPricingUnits)
        privatePlans = try container.decode([Plan].self, forKey: .privatePlans)
        isEligibleForTrial = try container.decode(Bool.self, forKey: .isEligibleForTrial)
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("id", id)
        try writer.write("merchantId", merchantId)
        for field in CustomerField.allCases {
            try writer.write(field.rawValue, attributes[field])
        }
        try writer.write("createdAt", createdAt)
        try writer.write("updatedAt", updatedAt)
        try writer.write("activeSubscriptions", activeSubscriptions)
        try writer.write("upcomingSubscriptions", upcomingSubscriptions)
        try writer.write("conditionalBillableAccess", conditionalBillableAccess)
        try writer.write("customPricingUnits", customPricingUnits)
        try writer.write("privatePlans", privatePlans)
        try writer.write("isEligibleForTrial", isEligibleForTrial)
    }
}

/// The success reply, published as `customer.created`.
public struct CustomerCreated: Codable, Sendable, Hashable, OrderedJSONObject {
    public static let type = "CustomerCreated"

    public var idempotencyKey: String
    public var defaultPlan: DefaultPlanResult
    public var customer: Customer

    public init(idempotencyKey: String, defaultPlan: DefaultPlanResult, customer: Customer) {
        self.idempotencyKey = idempotencyKey
        self.defaultPlan = defaultPlan
        self.customer = customer
    }

    private enum CodingKeys: String, CodingKey {
        case type, idempotencyKey, defaultPlan, customer
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try container.expectType(Self.type, forKey: .type)
        idempotencyKey = try container.decode(String.self, forKey: .idempotencyKey)
        defaultPlan = try container.decode(DefaultPlanResult.self, forKey: .defaultPlan)
        customer = try container.decode(Customer.self, forKey: .customer)
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("type", Self.type)
        try writer.write("idempotencyKey", idempotencyKey)
        try writer.write("defaultPlan", defaultPlan)
        try writer.write("customer", customer)
    }
}

/// The `error` object of a `CustomerCreateFailed` reply.
public struct CustomerCreateError: Codable, Sendable, Hashable, OrderedJSONObject {
    public var code: ErrorCode
    public var message: String
    public var fields: [FieldError]
    public var existingCustomerId: String?

    public init(code: ErrorCode, message: String, fields: [FieldError] = [], existingCustomerId: String? = nil) {
        self.code = code
        self.message = message
        self.fields = fields
        self.existingCustomerId = existingCustomerId
    }

    public init(_ rejection: CommandRejection, existingCustomerId: String? = nil) {
        self.init(code: rejection.code, message: rejection.message, fields: rejection.fields, existingCustomerId: existingCustomerId)
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("code", code)
        try writer.write("message", message)
        try writer.write("fields", fields)
        try writer.write("existingCustomerId", existingCustomerId)
    }
}

/// The failure reply, published as `customer.create_failed`.
public struct CustomerCreateFailed: Codable, Sendable, Hashable, OrderedJSONObject {
    public static let type = "CustomerCreateFailed"

    public var idempotencyKey: String?
    public var error: CustomerCreateError

    public init(idempotencyKey: String?, error: CustomerCreateError) {
        self.idempotencyKey = idempotencyKey
        self.error = error
    }

    private enum CodingKeys: String, CodingKey {
        case type, idempotencyKey, error
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        try container.expectType(Self.type, forKey: .type)
        idempotencyKey = try container.decodeIfPresent(String.self, forKey: .idempotencyKey)
        error = try container.decode(CustomerCreateError.self, forKey: .error)
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("type", Self.type)
        try writer.write("idempotencyKey", idempotencyKey)
        try writer.write("error", error)
    }
}

extension KeyedDecodingContainer {
    /// Replies name their type in `type`; decoding one as the other must fail.
    fileprivate func expectType(_ expected: String, forKey key: Key) throws {
        let type = try decode(String.self, forKey: key)
        guard type == expected else {
            throw DecodingError.dataCorruptedError(
                forKey: key, in: self, debugDescription: "expected type \(expected), got \(type)")
        }
    }
}
