@testable import CustomerDomain
import PropertyBased
import Testing

/// The word-at-a-time byte tests against the byte-by-byte rules they stand in for.
@Suite("Byte words")
struct ByteWordsTests {
    /// Bytes at and around every boundary the tests draw: below and at 0x20, the quote, the
    /// backslash, DEL, the C1 lead byte, the top bit.
    static let interesting: [UInt8] = [0x00, 0x01, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x5B, 0x5C, 0x5D, 0x61, 0x7E, 0x7F, 0x80,
                                       0x9F, 0xA0, 0xC1, 0xC2, 0xC3, 0xE2, 0xFE, 0xFF]
    /// Mostly ordinary letters, so that words without a match are common, at every length
    /// around one and two words and at every offset of the match.
    static let alphabet: [UInt8] = interesting + Array(repeating: UInt8(ascii: "a"), count: 40)
    static let runs: Generator<[UInt8], some SendableSequenceType> = Gen<UInt8?>.element(of: alphabet)
        .map { (byte: UInt8?) -> UInt8 in byte ?? UInt8(ascii: "a") }.array(of: 0...27)
    static let targets: Generator<UInt8, some SendableSequenceType> = Gen<UInt8?>.element(of: interesting)
        .map { (byte: UInt8?) -> UInt8 in byte ?? 0x22 }

    @Test func containsControlOrIsTheByteByByteRule() async {
        await propertyCheck(count: 3000, input: Self.runs, Self.targets, Self.targets) { bytes, a, b in
            let expected = bytes.contains { $0 < 0x20 || $0 == a || $0 == b }
            #expect(bytes.withUnsafeBufferPointer { ByteWords.containsControlOr(a, b, in: $0) } == expected, "\(bytes) \(a) \(b)")
        }
    }

    @Test func controlCharactersAreTheC0AndC1ScalarsAndDelete() async {
        await propertyCheck(count: 3000, input: Self.runs) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            let expected = text.unicodeScalars.contains { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }
            #expect(FieldRules.hasControlCharacters(text) == expected, "\(bytes)")
        }
    }

    @Test func escapeOverheadCountsWhatTheWriterAdds() async {
        await propertyCheck(count: 3000, input: Self.runs) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            var written: [UInt8] = []
            JSONBytesWriter.appendString(text, to: &written)
            var utf8 = text
            let overhead = utf8.withUTF8 { JSONBytesWriter.escapeOverhead($0) }
            #expect(written.count == text.utf8.count + 2 + overhead, "\(bytes)")
        }
    }
}
