@testable import CustomerDomain
import Foundation
import PropertyBased
import Testing

/// `FieldRules.isPlausibleEmail` is the schema's pattern for `email`, `^[^@\s]+@[^@\s]+\.[^@\s]+$`,
/// checked against that pattern itself on generated addresses.
@Suite("Email rule")
struct EmailRuleTests {
    /// The schema's pattern, read as JSON Schema reads it (ECMA-262): its `$` is the end of the
    /// string. ICU's `$` also matches before a line terminator that ends the string (\n, \r, \u{0B},
    /// \u{0C}, \u{85}, \u{2028}, \u{2029}), which would accept "a@b.co\n"; ICU's `\z` is ECMA's `$`.
    static let pattern = try! NSRegularExpression(pattern: #"^[^@\s]+@[^@\s]+\.[^@\s]+\z"#)

    /// Pieces that move the verdict: the separators, ASCII and Unicode whitespace (where ICU's
    /// `\s` and Swift's `isWhitespace` agree), letters in and out of ASCII.
    static let addresses = Gen<String?>.element(of: [
        "a", "b", "Z", "0", "@", ".", "..", " ", "\t", "\n", "\r", "\u{0B}", "\u{0C}", "\u{A0}", "\u{2003}", "\u{3000}",
        "é", "東", "😀", "-", "+", "_",
    ]).map { $0 ?? "" }.array(of: 0...12).map { $0.joined() }

    @Test func theRuleIsTheSchemasPattern() async {
        await propertyCheck(count: 2000, input: Self.addresses) { address in
            let range = NSRange(address.startIndex..., in: address)
            let matches = Self.pattern.firstMatch(in: address, range: range) != nil
            #expect(FieldRules.isPlausibleEmail(address) == matches, "\(address.unicodeScalars.map { String($0.value, radix: 16) })")
        }
    }

    @Test(arguments: ["a@b.co", "ada.lovelace@analytical-engines.example", "é@東.jp", "a@b.c.d"])
    func plausibleAddressesPass(_ address: String) {
        #expect(FieldRules.isPlausibleEmail(address))
    }

    @Test(arguments: ["", "a", "@b.co", "a@", "a@b", "a@.co", "a@b.", "a@@b.co", "a@b@c.co", "a b@c.co", "a@b.co\u{A0}", "a\u{2003}@b.co",
                       "a@b.co\n", "a@b.co\r\n", "b@.._\u{0C}", "a@b.co\u{2028}"])
    func implausibleAddressesFail(_ address: String) {
        #expect(!FieldRules.isPlausibleEmail(address))
    }
}
