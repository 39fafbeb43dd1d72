@testable import CustomerDomain
import Foundation
import Testing

/// A catalog plan as JSON, with keys overridden or removed (`nil`).
func planJSON(_ overrides: [String: String?] = [:]) -> String {
    var fields: [(String, String)] = [
        ("id", #""basic""#), ("name", #""Basic""#), ("currency", #""USD""#), ("price", "900"),
        ("billingCadence", #""monthly""#), ("trialDays", "0"), ("isPrivate", "false"), ("status", #""available""#),
        ("default", "false"),
    ]
    for (key, value) in overrides.sorted(by: { $0.key < $1.key }) {
        fields.removeAll { $0.0 == key }
        if let value { fields.append((key, value)) }
    }
    return "{" + fields.map { #""\#($0.0)":\#($0.1)"# }.joined(separator: ",") + "}"
}

func catalogIssues(_ json: String) -> [String] {
    switch PlanCatalog.parse(Array(json.utf8)) {
    case .success: []
    case .failure(let error): error.issues.map(\.path)
    }
}

struct CatalogCase: Sendable, CustomTestStringConvertible {
    var overrides: [String: String?]
    var path: String
    var testDescription: String { path + " " + overrides.description }
}

@Suite("Plan catalog validation")
struct PlanCatalogTests {
    @Test func acceptsAValidCatalog() throws {
        let json = #"{"plans":[\#(planJSON(["default": "true", "price": "0"])),\#(planJSON(["id": #""pro""#, "description": "null", "availableCountries": #"["US","CA"]"#, "availableFrom": #""2030-01-01T00:00:00.000Z""#]))]}"#
        let catalog = try PlanCatalog.parse(Array(json.utf8)).get()
        #expect(catalog.plans.count == 2)
        #expect(catalog.defaultPlan?.id == "basic")
        #expect(catalog.plans[1].plan.availableCountries == ["US", "CA"])
        #expect(catalog.plans[1].plan.availableFrom == Timestamp(iso8601: "2030-01-01T00:00:00.000Z"))
    }

    @Test("each field rule names its path", arguments: [
        CatalogCase(overrides: ["id": nil], path: "plans[0].id"),
        CatalogCase(overrides: ["id": #""""#], path: "plans[0].id"),
        CatalogCase(overrides: ["id": "7"], path: "plans[0].id"),
        CatalogCase(overrides: ["name": nil], path: "plans[0].name"),
        CatalogCase(overrides: ["description": "3"], path: "plans[0].description"),
        CatalogCase(overrides: ["currency": #""EUR""#], path: "plans[0].currency"),
        CatalogCase(overrides: ["price": "-1"], path: "plans[0].price"),
        CatalogCase(overrides: ["price": "9.5"], path: "plans[0].price"),
        CatalogCase(overrides: ["price": #""900""#], path: "plans[0].price"),
        CatalogCase(overrides: ["billingCadence": #""weekly""#], path: "plans[0].billingCadence"),
        CatalogCase(overrides: ["trialDays": "-3"], path: "plans[0].trialDays"),
        CatalogCase(overrides: ["isPrivate": "0"], path: "plans[0].isPrivate"),
        CatalogCase(overrides: ["status": #""retired""#], path: "plans[0].status"),
        CatalogCase(overrides: ["default": nil], path: "plans[0].default"),
        CatalogCase(overrides: ["availableCountries": #"["US","usa"]"#], path: "plans[0].availableCountries[1]"),
        CatalogCase(overrides: ["availableCountries": #"["us"]"#], path: "plans[0].availableCountries[0]"),
        CatalogCase(overrides: ["availableCountries": #"["US","US"]"#], path: "plans[0].availableCountries[1]"),
        CatalogCase(overrides: ["availableCountries": "[]"], path: "plans[0].availableCountries"),
        CatalogCase(overrides: ["availableCountries": #""US""#], path: "plans[0].availableCountries"),
        CatalogCase(overrides: ["availableFrom": #""2030-01-01""#], path: "plans[0].availableFrom"),
        CatalogCase(overrides: ["availableFrom": #""2030-01-01T00:00:00Z""#], path: "plans[0].availableFrom"),
        CatalogCase(overrides: ["colour": #""red""#], path: "plans[0].colour"),
        CatalogCase(overrides: ["default": "true", "status": #""archived""#], path: "plans[0].status"),
        CatalogCase(overrides: ["default": "true", "isPrivate": "true"], path: "plans[0].isPrivate"),
    ])
    func fieldRule(_ testCase: CatalogCase) {
        #expect(catalogIssues(#"{"plans":[\#(planJSON(testCase.overrides))]}"#) == [testCase.path])
    }

    @Test func atMostOneDefault() {
        let json = #"{"plans":[\#(planJSON(["default": "true"])),\#(planJSON(["id": #""b""#, "default": "true"]))]}"#
        #expect(catalogIssues(json) == ["plans[1].default"])
    }

    @Test func uniqueIDs() {
        let json = #"{"plans":[\#(planJSON()),\#(planJSON()),\#(planJSON())]}"#
        #expect(catalogIssues(json) == ["plans[1].id", "plans[2].id"])
    }

    @Test func documentShape() {
        #expect(catalogIssues("[]") == ["$"])
        #expect(catalogIssues("not json") == ["$"])
        #expect(catalogIssues("{}") == ["plans"])
        #expect(catalogIssues(#"{"plans":{}}"#) == ["plans"])
        #expect(catalogIssues(#"{"plans":[],"extra":1}"#) == ["extra"])
        #expect(catalogIssues(#"{"plans":[1]}"#) == ["plans[0]"])
        #expect(catalogIssues(#"{"plans":[]}"#).isEmpty)
    }

    @Test func reportsEveryIssueWithItsRule() throws {
        let json = #"{"plans":[\#(planJSON(["price": "-1", "currency": #""EUR""#]))]}"#
        guard case .failure(let error) = PlanCatalog.parse(Array(json.utf8)) else {
            Issue.record("accepted")
            return
        }
        #expect(error.description == """
            plans[0].currency: must be "USD"
            plans[0].price: must be a whole number of cents in 0...1000000000
            """)
    }

    @Test func defaultPlanSkipsArchivedDefaults() {
        var catalog = PlanCatalog(plans: [CatalogPlan(plan: Plan(id: "a", name: "A", price: 0, billingCadence: .monthly), isDefault: true)])
        #expect(catalog.defaultPlan?.id == "a")
        catalog.plans[0].plan.status = .archived
        #expect(catalog.defaultPlan == nil)
    }
}
