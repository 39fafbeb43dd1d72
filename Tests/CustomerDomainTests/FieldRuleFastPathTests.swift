@testable import CustomerDomain
import PropertyBased
import Testing

/// The field rules' byte-wise fast paths against the Unicode definitions they stand in for.
@Suite("Field rules: fast paths")
struct FieldRuleFastPathTests {
    /// Short strings of ASCII letters, digits, spaces, controls, and a few non-ASCII scalars
    /// (whitespace ones among them), so that every end of a string is sometimes each kind.
    static let scalars: [Unicode.Scalar] = ["a", "z", "A", "Z", "m", "0", "-", " ", "\t", "\u{7F}", "\u{85}", "\u{A0}",
                                            "\u{200B}", "\u{FEFF}", "\u{3000}", "ß", "é", "東", "{", "`", "@", "[", "~", "!"]
    static let texts = Gen<Unicode.Scalar?>.element(of: scalars).map { $0 ?? "a" }.array(of: 0...6)
        .map { String(String.UnicodeScalarView($0)) }

    @Test func asciiUppercasingIsUppercasedForASCIIAndNothingElse() async {
        await propertyCheck(count: 3000, input: Self.texts) { text in
            let expected = text.utf8.allSatisfy { $0 < 0x80 } ? text.uppercased() : nil
            #expect(FieldRules.asciiUppercased(text) == expected, "\(text.unicodeScalars.map(\.value))")
        }
    }

    @Test func surroundingWhitespaceIsTheScalarRule() async {
        await propertyCheck(count: 3000, input: Self.texts) { text in
            let isEdge = { (scalar: Unicode.Scalar) in
                scalar.properties.isWhitespace || scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
                    || scalar.value == 0x200B || scalar.value == 0xFEFF
            }
            let expected = text.unicodeScalars.first.map(isEdge) == true || text.unicodeScalars.last.map(isEdge) == true
            #expect(FieldRules.hasSurroundingWhitespace(text) == expected, "\(text.unicodeScalars.map(\.value))")
        }
    }
}
