/// A plan as a catalog file lists it: the reply shape plus whether it is the merchant's default.
public struct CatalogPlan: Sendable, Hashable, Decodable, OrderedJSONObject {
    public var plan: Plan
    public var isDefault: Bool

    public init(plan: Plan, isDefault: Bool = false) {
        self.plan = plan
        self.isDefault = isDefault
    }

    public init(from decoder: any Decoder) throws {
        plan = try Plan(from: decoder)
        isDefault = try decoder.container(keyedBy: JSONKey.self).decode(Bool.self, forKey: JSONKey("default"))
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try plan.writeCoreFields(to: &writer, omittingAbsent: true)
        try writer.write("default", isDefault)
        try plan.writeAvailability(to: &writer, omittingAbsent: true)
    }
}

/// A merchant's plan catalog file: `{"plans": [...]}`.
public struct PlanCatalog: Sendable, Hashable, Decodable, OrderedJSONObject {
    public var plans: [CatalogPlan]

    public init(plans: [CatalogPlan]) {
        self.plans = plans
    }

    /// The plan new customers are offered, if one is marked default and still available.
    public var defaultPlan: Plan? {
        plans.first { $0.isDefault && $0.plan.status == .available }?.plan
    }

    public func writeFields(to writer: inout some JSONFieldWriter) throws {
        try writer.write("plans", plans)
    }
}

/// One broken rule of a catalog file, e.g. `plans[2].price: must be an integer ≥ 0`.
public struct CatalogIssue: Sendable, Hashable, CustomStringConvertible {
    /// Where: `plans[2].price`, `plans[0].availableCountries[1]`, or `$` for the whole file.
    public var path: String
    public var rule: String

    public var description: String { "\(path): \(rule)" }
}

/// Every broken rule of a catalog file.
public struct PlanCatalogError: Error, Sendable, Hashable, CustomStringConvertible {
    public var issues: [CatalogIssue]

    public var description: String { issues.map(\.description).joined(separator: "\n") }
}

extension PlanCatalog {
    /// Decodes and validates a catalog file, reporting every broken rule with its field path.
    public static func parse(_ bytes: [UInt8]) -> Result<PlanCatalog, PlanCatalogError> {
        var validator = CatalogValidator()
        let plans = validator.catalog(JSONValue.parse(bytes))
        validator.checkDefaults(plans)
        validator.checkUniqueIDs(plans)
        return validator.issues.isEmpty
            ? .success(PlanCatalog(plans: plans))
            : .failure(PlanCatalogError(issues: validator.issues))
    }
}
