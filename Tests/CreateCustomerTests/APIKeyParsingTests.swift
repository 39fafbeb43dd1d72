@testable import CreateCustomer
import Testing

/// `APIKeys.keyID(from:)` reads ASCII references byte by byte: for every ASCII reference it must
/// answer exactly what the character-by-character reading answers.
@Suite("API key ids")
struct APIKeyParsingTests {
    /// Pieces that make the cases that matter: prefixes (twice, or half), separators, hex digits of
    /// both cases, letters just past `f`, and ids near 16 digits long.
    static let pieces = ["sk_", "pk_", "sk", "_", "0", "9", "a", "f", "A", "F", "g", "G", "z", " ", "-",
                         "0123456789abcdef", "0123456789ABCDEF", "0123456789abcde", "0123456789abcdef0"]

    @Test func asciiReferencesGetTheSameAnswerAsCharacterReading() {
        // Every concatenation of up to three pieces (7,240 references).
        var references = [""]
        var last = [""]
        for _ in 1...3 {
            last = last.flatMap { prefix in Self.pieces.map { prefix + $0 } }
            references += last
        }
        var checked = 0
        for reference in references {
            let bytes = APIKeys.asciiKeyID(from: reference)
            let characters = APIKeys.characterKeyID(from: reference)
            #expect(bytes?.id == characters?.id && bytes?.type == characters?.type, "\(reference)")
            if characters != nil { checked += 1 }
        }
        // The references must include valid ones, or the comparison proves little.
        #expect(checked > 50)
        for reference in ["sk_0123456789abcdef_secret", "pk_0123456789ABCDEF", "0123456789abcdef", "sk_pk_0123456789abcdef"] {
            #expect(APIKeys.keyID(from: reference) != nil, "\(reference)")
        }
        // Not ASCII: the character path answers (full-width digits are hex digits to `Character`).
        #expect(APIKeys.asciiKeyID(from: "sk_０123456789abcdef") == nil)
        #expect(APIKeys.keyID(from: "sk_０123456789abcdef")?.id == APIKeys.characterKeyID(from: "sk_０123456789abcdef")?.id)
    }
}
