@testable import CustomerDomain
import Foundation
import Testing

/// Every string rule of `schemas/create-customer.schema.json` against the worker's validator: for
/// generated values of each property, the schema (read from the file, its keywords evaluated here)
/// and `CreateCustomerCommand.parse` must accept and refuse the same values.
///
/// The one allowed difference is the one the schema documents: a country that matches
/// `^[A-Za-z]{2}$` but is not on the ISO 3166-1 list is refused by the worker only
/// (`invalid_country`). States are tested without a country, where they are free text.
///
/// Cases come from the suite's seeded SplitMix64 generator rather than swift-property-based: the
/// same cases on every run, a failing value printed as it is, and no extra package to build on a
/// machine four sessions share.
@Suite struct SchemaConformanceTests {
    static let schemaURL = ContractExamples.folder.deletingLastPathComponent().appendingPathComponent("create-customer.schema.json")

    /// The string keywords of one property, with its `$ref` followed.
    struct StringRule {
        var property: String
        var allowsNull = false
        var minLength: Int?
        var maxLength: Int?
        var pattern: NSRegularExpression?
        var patternSource: String?
        var enumeration: [String]?

        func accepts(_ value: String) -> Bool {
            let length = value.unicodeScalars.count  // JSON Schema counts code points
            if let minLength, length < minLength { return false }
            if let maxLength, length > maxLength { return false }
            if let enumeration, !enumeration.contains(value) { return false }
            if let pattern {
                let range = NSRange(value.startIndex..., in: value)
                if pattern.firstMatch(in: value, range: range) == nil { return false }
            }
            return true
        }
    }

    static func rules() throws -> [StringRule] {
        let root = try #require(try JSONSerialization.jsonObject(with: Data(contentsOf: schemaURL)) as? [String: Any])
        let properties = try #require(root["properties"] as? [String: [String: Any]])
        let definitions = root["$defs"] as? [String: [String: Any]] ?? [:]
        return try properties.keys.sorted().map { name in
            var node = properties[name]!
            if let ref = node["$ref"] as? String {
                let definition = try #require(definitions[String(ref.dropFirst("#/$defs/".count))], "\(name): \(ref)")
                node = definition.merging(node) { own, _ in own }
            }
            var rule = StringRule(property: name)
            let types = (node["type"] as? [String]) ?? [(node["type"] as? String) ?? ""]
            #expect(types.contains("string"), "\(name) is a string property")
            rule.allowsNull = types.contains("null")
            rule.minLength = node["minLength"] as? Int
            rule.maxLength = node["maxLength"] as? Int
            rule.enumeration = node["enum"] as? [String]
            if let source = node["pattern"] as? String {
                rule.patternSource = source
                rule.pattern = try NSRegularExpression(pattern: try ecmaToICU(source))
            }
            return rule
        }
    }

    /// JSON Schema patterns are ECMA 262; ICU differs where the schema's patterns would notice:
    /// `\d` is Unicode-wide in ICU (ASCII in ECMA) and `$` also matches before a final newline.
    /// Anything else this translation does not know is refused, so a new construct cannot slip by.
    static func ecmaToICU(_ pattern: String) throws -> String {
        var output = ""
        var inClass = false
        var characters = Array(pattern)[...]
        while let character = characters.popFirst() {
            switch character {
            case "\\":
                guard let escaped = characters.popFirst() else { throw PatternError(pattern: pattern) }
                switch escaped {
                case "d": output += inClass ? "0-9" : "[0-9]"
                case "u": output += "\\u"
                case ".", "-", "\\", "[", "]", "(", ")", "?", "*", "+", "^", "$", "/": output += "\\\(escaped)"
                default:
                    Issue.record("pattern \(pattern): no ECMA-to-ICU translation for \\\(escaped)")
                    output += "\\\(escaped)"
                }
            case "[" where !inClass: inClass = true; output.append(character)
            case "]" where inClass: inClass = false; output.append(character)
            case "$" where !inClass: output += "\\z"
            default: output.append(character)
            }
        }
        return output
    }

    struct PatternError: Error {
        let pattern: String
    }

    /// Scalars at the edges of every rule: each class boundary of the patterns, whitespace,
    /// invisible characters, non-ASCII digits, letters, and the punctuation emails and zip codes use.
    static let alphabet: [Unicode.Scalar] = [
        "a", "Z", "q", "0", "7", "9", "@", ".", "-", "_", " ", "\t", "\n", "\r", "\u{0}", "\u{1}", "\u{1F}", "\u{20}",
        "\u{7F}", "\u{80}", "\u{85}", "\u{9F}", "\u{A0}", "\u{A1}", "\u{1680}", "\u{2000}", "\u{200A}", "\u{200B}",
        "\u{200C}", "\u{2028}", "\u{2029}", "\u{202F}", "\u{205F}", "\u{3000}", "\u{FEFF}", "é", "中", "😀",
        "\u{0669}", "\u{FF11}",
    ]

    /// Valid-looking starting points per property, edited at random by the generator.
    static func seeds(_ property: String) -> [String] {
        switch property {
        case "email": ["ada@analytical-engines.example", "a@b.co", "x@y.z"]
        case "billingZipCode", "shippingZipCode": ["78701", "78701-1234", "00000"]
        case "billingCountry", "shippingCountry": ["us", "DE", "fr", "Zz"]
        default: ["cus_1042", "Ada Lovelace", "x", "10 Downing St."]
        }
    }

    static func generate(_ property: String, _ random: inout SeededGenerator) -> String {
        func scalar() -> Unicode.Scalar { alphabet.randomElement(using: &random)! }
        switch Int.random(in: 0..<10, using: &random) {
        case 0...1:  // a short string of edge scalars
            var text = String.UnicodeScalarView()
            for _ in 0..<Int.random(in: 0...4, using: &random) { text.append(scalar()) }
            return String(text)
        case 2:  // around the length limits
            let length = [1, 2, 254, 255, 256].randomElement(using: &random)!
            var text = String(repeating: String(scalar()), count: length - 1)
            text.unicodeScalars.append(scalar())
            return text
        case 3:  // two letters, any case: what a country looks like
            let letters = Array("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
            return String([letters.randomElement(using: &random)!, letters.randomElement(using: &random)!])
        case 4:  // a seed as it is: the accepting side of every rule
            return seeds(property).randomElement(using: &random)!
        default:  // a seed with one edit: insert, replace or delete a scalar, or wrap it
            var text = Array(seeds(property).randomElement(using: &random)!.unicodeScalars)
            let index = Int.random(in: 0..<text.count, using: &random)
            switch Int.random(in: 0..<5, using: &random) {
            case 0: text.insert(scalar(), at: index)
            case 1: text[index] = scalar()
            case 2: text.remove(at: index)
            case 3: text.insert(scalar(), at: 0)
            default: text.append(scalar())
            }
            var view = String.UnicodeScalarView()
            view.append(contentsOf: text)
            return String(view)
        }
    }

    /// Whether the worker accepts `value` as `property`: no field error for it.
    static func workerAccepts(_ property: String, _ value: String) throws -> (accepted: Bool, codes: [String]) {
        var body: [String: Any] = ["externalId": "conformance-\(property)"]
        body[property] = value
        let json = try JSONSerialization.data(withJSONObject: body)
        switch CreateCustomerCommand.parse(body: Array(json), contentType: "application/json") {
        case .success: return (true, [])
        case .failure(let rejection):
            #expect(rejection.code == .validationFailed && !rejection.fields.isEmpty && rejection.fields.allSatisfy { $0.field == property },
                    "only \(property) is wrong: \(rejection)")
            return (false, rejection.fields.map(\.code.rawValue))
        }
    }

    @Test func everyPropertyOfTheSchemaIsARuleOfTheValidator() throws {
        let rules = try Self.rules()
        #expect(Set(rules.map(\.property)) == Set(CustomerField.allCases.map(\.rawValue)), "the schema's properties are the command's fields")
        #expect(rules.filter { $0.pattern != nil }.count >= 8, "patterns were read")
    }

    @Test func theValidatorAcceptsExactlyWhatTheSchemaAccepts() throws {
        var random = SeededGenerator(seed: 0xC0_27AC7)
        for rule in try Self.rules() {
            var outcomes = (accepted: 0, refused: 0)
            for _ in 0..<400 {
                let value = Self.generate(rule.property, &random)
                let schema = rule.accepts(value)
                let worker = try Self.workerAccepts(rule.property, value)
                outcomes.accepted += schema ? 1 : 0
                outcomes.refused += schema ? 0 : 1
                if schema, !worker.accepted, worker.codes == ["invalid_country"],
                   Geography.countryCodes.contains(value.uppercased()) == false {
                    continue  // the documented difference: the ISO list
                }
                #expect(schema == worker.accepted, """
                    \(rule.property) = \(value.unicodeScalars.map { "U+\(String($0.value, radix: 16, uppercase: true))" }.joined(separator: " ")) \
                    (\(value.debugDescription)): the schema \(schema ? "accepts" : "refuses") it (pattern \(rule.patternSource ?? "none")), \
                    the worker \(worker.accepted ? "accepts" : "refuses with \(worker.codes)") it
                    """)
            }
            #expect(outcomes.accepted >= 20 && outcomes.refused >= 20, "\(rule.property): the cases cover both sides: \(outcomes)")
        }
    }

    /// The characters the issue names, at each end and inside, where the schema says so.
    @Test func invisibleEdgesAndControlCharactersAreRefusedByBoth() throws {
        let rules = Dictionary(uniqueKeysWithValues: try Self.rules().map { ($0.property, $0) })
        for value in ["\u{FEFF}cus-1", "cus-1\u{FEFF}", "\u{200B}cus-1", "cus-1\u{200B}"] {
            #expect(!rules["externalId"]!.accepts(value))
            #expect(try Self.workerAccepts("externalId", value).codes == ["surrounding_whitespace"], "\(value.debugDescription)")
        }
        let inside = try Self.workerAccepts("externalId", "cus\u{FEFF}-1")
        #expect(rules["externalId"]!.accepts("cus\u{FEFF}-1") && inside.accepted, "inside, U+FEFF is no edge")
        for field in CustomerField.allCases {
            for control in ["\u{0}", "\u{7F}", "\u{1B}", "\u{85}"] {
                let value = field == .email ? "a\(control)@b.co" : "x\(control)y"
                #expect(!rules[field.rawValue]!.accepts(value), "the schema refuses \(control.debugDescription) in \(field)")
                let worker = try Self.workerAccepts(field.rawValue, value)
                #expect(!worker.accepted, "\(field) with \(control.debugDescription)")
                if field != .billingZipCode, field != .shippingZipCode, field != .billingCountry, field != .shippingCountry {
                    #expect(worker.codes == ["control_characters"], "\(field): \(worker.codes)")
                }
            }
        }
    }
}
