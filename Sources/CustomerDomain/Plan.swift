public enum BillingCadence: String, Codable, Sendable, CaseIterable {
    case monthly, quarterly, annually
}

public enum PlanStatus: String, Codable, Sendable, CaseIterable {
    case available, archived
}

/// A plan as replies show it (nested in a subscription, or in `privatePlans`). Property names are
/// the contract's JSON keys.
public struct Plan: Codable, Sendable, Hashable, OrderedJSONObject {
    public static let currency = "USD"
    /// Prices a catalog may set, in cents: free up to 10,000,000.00 USD per billing period.
    public static let priceRange = 0...1_000_000_000
    /// Trial lengths a catalog may set: none up to two years.
    public static let trialDaysRange = 0...730

    public var id: String
    public var name: String
    public var description: String?
    public var currency: String
    /// Minor units (cents); 0 means free.
    public var price: Int
    public var billingCadence: BillingCadence
    public var trialDays: Int
    public var isPrivate: Bool
    public var status: PlanStatus
    /// Nil means everywhere.
    public var availableCountries: [String]?
    public var availableFrom: Timestamp?

    public init(
        id: String, name: String, description: String? = nil, currency: String = Plan.currency,
        price: Int, billingCadence: BillingCadence, trialDays: Int = 0, isPrivate: Bool = false,
        status: PlanStatus = .available, availableCountries: [String]? = nil, availableFrom: Timestamp? = nil
    ) {
        self.id = id
        self.name = name
        self.description = description
        self.currency = currency
        self.price = price
        self.billingCadence = billingCadence
        self.trialDays = trialDays
        self.isPrivate = isPrivate
        self.status = status
        self.availableCountries = availableCountries
        self.availableFrom = availableFrom
    }

    public var isFree: Bool { price == 0 }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writeCoreFields(to: &writer, omittingAbsent: false)
        try writeAvailability(to: &writer, omittingAbsent: false)
    }

    /// `id` … `status`. Replies write every key (null when absent); a catalog file leaves optional
    /// keys out, and puts `default` between these and the availability keys.
    func writeCoreFields(to writer: inout some JSONFieldWriter, omittingAbsent: Bool) throws {
        try writer.write("id", id)
        try writer.write("name", name)
        if omittingAbsent {
            try writer.writeIfPresent("description", description)
        } else {
            try writer.write("description", description)
        }
        try writer.write("currency", currency)
        try writer.write("price", price)
        try writer.write("billingCadence", billingCadence)
        try writer.write("trialDays", trialDays)
        try writer.write("isPrivate", isPrivate)
        try writer.write("status", status)
    }

    func writeAvailability(to writer: inout some JSONFieldWriter, omittingAbsent: Bool) throws {
        if omittingAbsent {
            try writer.writeIfPresent("availableCountries", availableCountries)
            try writer.writeIfPresent("availableFrom", availableFrom)
        } else {
            try writer.write("availableCountries", availableCountries)
            try writer.write("availableFrom", availableFrom)
        }
    }
}
