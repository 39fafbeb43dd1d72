/// Walks a parsed catalog file, collecting every broken rule with its path.
struct CatalogValidator {
    private(set) var issues: [CatalogIssue] = []

    private static let planKeys: Set<String> = [
        "id", "name", "description", "currency", "price", "billingCadence", "trialDays", "isPrivate", "status",
        "default", "availableCountries", "availableFrom",
    ]

    mutating func catalog(_ root: JSONValue?) -> [CatalogPlan] {
        guard case .object(let object)? = root else {
            fail("$", "must be a JSON object with a \"plans\" array")
            return []
        }
        for key in object.keys.sorted() where key != "plans" {
            fail(key, "is not a catalog field")
        }
        guard case .array(let items)? = object["plans"] else {
            fail("plans", "is required and must be an array")
            return []
        }
        return items.enumerated().compactMap { index, item in plan(item, path: "plans[\(index)]") }
    }

    /// At most one default, and it must be available and public.
    mutating func checkDefaults(_ plans: [CatalogPlan]) {
        let defaults = plans.indices.filter { plans[$0].isDefault }
        for index in defaults.dropFirst() {
            fail("plans[\(index)].default", "only one plan may be the default; plans[\(defaults[0])] already is")
        }
        for index in defaults {
            if plans[index].plan.status != .available {
                fail("plans[\(index)].status", "the default plan must be available")
            }
            if plans[index].plan.isPrivate {
                fail("plans[\(index)].isPrivate", "the default plan must not be private")
            }
        }
    }

    mutating func checkUniqueIDs(_ plans: [CatalogPlan]) {
        var firstIndex: [String: Int] = [:]
        for (index, catalogPlan) in plans.enumerated() {
            if let first = firstIndex[catalogPlan.plan.id] {
                fail("plans[\(index)].id", "duplicates the id of plans[\(first)]")
            } else {
                firstIndex[catalogPlan.plan.id] = index
            }
        }
    }

    /// Nil when the plan has any issue (they are recorded).
    private mutating func plan(_ value: JSONValue, path: String) -> CatalogPlan? {
        guard case .object(let fields) = value else {
            fail(path, "must be an object")
            return nil
        }
        var reader = PlanFieldReader(fields: fields, path: path)
        for key in fields.keys.sorted() where !Self.planKeys.contains(key) {
            reader.fail(key, "is not a plan field")
        }
        let plan = reader.readPlan()
        issues += reader.issues
        return plan
    }

    private mutating func fail(_ path: String, _ rule: String) {
        issues.append(CatalogIssue(path: path, rule: rule))
    }
}

/// Reads the keys of one catalog plan object, recording an issue for each bad key.
private struct PlanFieldReader {
    let fields: [String: JSONValue]
    let path: String
    var issues: [CatalogIssue] = []

    mutating func readPlan() -> CatalogPlan? {
        let id = text("id")
        let name = text("name")
        let description = optionalText("description")
        let currency = self.currency("currency")
        let price = bounded("price", Plan.priceRange, unit: "cents")
        let cadence: BillingCadence? = choice("billingCadence")
        let trialDays = bounded("trialDays", Plan.trialDaysRange, unit: "days")
        let isPrivate = flag("isPrivate")
        let status: PlanStatus? = choice("status")
        let isDefault = flag("default")
        let countries = self.countries("availableCountries")
        let availableFrom = timestamp("availableFrom")
        guard issues.isEmpty, let id, let name, let currency, let price, let cadence, let trialDays,
              let isPrivate, let status, let isDefault else { return nil }
        let plan = Plan(
            id: id, name: name, description: description, currency: currency, price: price,
            billingCadence: cadence, trialDays: trialDays, isPrivate: isPrivate, status: status,
            availableCountries: countries, availableFrom: availableFrom)
        return CatalogPlan(plan: plan, isDefault: isDefault)
    }

    mutating func fail(_ key: String, _ rule: String) {
        issues.append(CatalogIssue(path: "\(path).\(key)", rule: rule))
    }

    /// The value of a required key that `convert` accepts; records `is required` when the key is
    /// absent and `rule` when `convert` returns nil.
    private mutating func required<Value>(
        _ key: String, _ rule: (JSONValue) -> String, _ convert: (JSONValue) -> Value?
    ) -> Value? {
        guard let value = fields[key] else {
            fail(key, "is required")
            return nil
        }
        guard let converted = convert(value) else {
            fail(key, rule(value))
            return nil
        }
        return converted
    }

    private mutating func text(_ key: String) -> String? {
        let limit = CommandValidator.maximumLength
        let string = required(key, { "must be a string, not \($0.kindDescription)" }, \.stringValue)
        if string?.isEmpty == true {
            fail(key, "must not be empty")
        } else if let string, FieldRules.length(of: string) > limit {
            fail(key, "must be at most \(limit) characters")
        } else {
            return string
        }
        return nil
    }

    private mutating func optionalText(_ key: String) -> String? {
        switch fields[key] {
        case nil, .null?: return nil
        case .string(let string)?: return string
        case let value?:
            fail(key, "must be a string or null, not \(value.kindDescription)")
            return nil
        }
    }

    private mutating func currency(_ key: String) -> String? {
        required(key, { _ in "must be \"\(Plan.currency)\"" }) { $0.stringValue == Plan.currency ? Plan.currency : nil }
    }

    /// A whole number inside `range`; the rule names the range.
    private mutating func bounded(_ key: String, _ range: ClosedRange<Int>, unit: String) -> Int? {
        required(key, { _ in "must be a whole number of \(unit) in \(range.lowerBound)...\(range.upperBound)" }) {
            $0.integerValue.flatMap { range.contains($0) ? $0 : nil }
        }
    }

    private mutating func flag(_ key: String) -> Bool? {
        required(key, { "must be true or false, not \($0.kindDescription)" }, \.boolValue)
    }

    private mutating func choice<Choice: RawRepresentable<String> & CaseIterable>(_ key: String) -> Choice? {
        let choices = Choice.allCases.map(\.rawValue).joined(separator: ", ")
        return required(key, { _ in "must be one of " + choices }) { $0.stringValue.flatMap(Choice.init(rawValue:)) }
    }

    /// Optional; when present, an array of upper-case ISO 3166-1 alpha-2 codes.
    private mutating func countries(_ key: String) -> [String]? {
        switch fields[key] {
        case nil, .null?:
            return nil
        case .array(let items)?:
            if items.isEmpty { fail(key, "must list at least one country; leave it out for everywhere") }
            var codes: [String] = []
            for (index, item) in items.enumerated() {
                guard case .string(let code) = item, Geography.countryCodes.contains(code) else {
                    fail("\(key)[\(index)]", "must be an ISO 3166-1 alpha-2 country code in upper case")
                    continue
                }
                if codes.contains(code) { fail("\(key)[\(index)]", "repeats \(code)") }
                codes.append(code)
            }
            return codes
        case let value?:
            fail(key, "must be an array of country codes, not \(value.kindDescription)")
            return nil
        }
    }

    private mutating func timestamp(_ key: String) -> Timestamp? {
        switch fields[key] {
        case nil, .null?:
            return nil
        case .string(let text)?:
            // The contract's one format only: UTC with milliseconds.
            guard let timestamp = Timestamp(iso8601: text), timestamp.iso8601 == text else {
                fail(key, "must be an ISO 8601 UTC timestamp with milliseconds, e.g. 2021-01-01T00:00:00.000Z")
                return nil
            }
            guard Timestamp.validRange.contains(timestamp) else {
                fail(key, "must be between \(Timestamp.validRange.lowerBound.iso8601) and \(Timestamp.validRange.upperBound.iso8601)")
                return nil
            }
            return timestamp
        case let value?:
            fail(key, "must be an ISO 8601 timestamp string, not \(value.kindDescription)")
            return nil
        }
    }
}
