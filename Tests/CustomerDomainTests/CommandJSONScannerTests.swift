import Foundation
import Testing

@testable import CustomerDomain

/// The command scanner must read a body as Foundation does: invalid wherever `JSONSerialization`
/// (which checks every value) refuses it, else exactly what `JSONDecoder` (the decoder it replaced)
/// made of it — the same keys and values, or "not an object". `JSONDecoder` alone is no reference
/// for validity: it never checks values it is not asked for, so it took `{"x": -3..e2}` for an
/// object with an unknown key. Checked on hand-picked edge cases and many generated bodies.
@Suite struct CommandJSONScannerTests {
    /// What `JSONDecoder` makes of a body, in the scanner's terms.
    enum Reading: Equatable {
        case object(RawCommandObject)
        case notAnObject
        case invalidJSON
    }

    static func scanner(_ body: [UInt8]) -> Reading {
        switch CommandJSONScanner.scan(body) {
        case .success(let object): .object(object)
        case .failure(.notAnObject): .notAnObject
        case .failure(.invalidJSON): .invalidJSON
        }
    }

    static func reference(_ body: [UInt8]) -> Reading {
        guard (try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])) != nil else {
            return .invalidJSON
        }
        do {
            return .object(try JSONDecoder().decode(ReferenceObject.self, from: Data(body)).object)
        } catch DecodingError.typeMismatch {
            return .notAnObject
        } catch {
            return .invalidJSON
        }
    }

    /// The decoding the scanner replaced, kept here as the reference.
    struct ReferenceObject: Decodable {
        var object = RawCommandObject()

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for key in container.allKeys {
                if let field = CustomerField(rawValue: key.stringValue) {
                    object.fields[field] = try Self.value(in: container, for: key)
                } else {
                    object.unknownKeys.append(key.stringValue)
                }
            }
            object.unknownKeys.sort()
        }

        private static func value(in container: KeyedDecodingContainer<Key>, for key: Key) throws -> RawFieldValue {
            if try container.decodeNil(forKey: key) { return .null }
            do {
                return .string(try container.decode(String.self, forKey: key))
            } catch DecodingError.typeMismatch {
                return .notString
            }
        }

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }
    }

    static let edgeCases: [String] = [
        #"{}"#, #" { } "#, "\t{\n}\r\n", #"{"externalId":"a"}"#, #"{"externalId":null}"#, #"{"externalId":1}"#,
        #"{"externalId":true,"name":false,"email":[],"billingCity":{}}"#, #"{"externalId":"a","extra":{"x":[1,2,{"y":null}]}}"#,
        #"{"name":"\u00e9\u4e2d\ud83d\ude00","email":"a\/b\\c\"d\b\f\n\r\t"}"#, #"{"name":"\ud83d"}"#, #"{"name":"\ude00"}"#,
        #"{"name":"\ud83dx"}"#, #"{"name":"\ud83d\u0041"}"#, #"{"zz":"\ud83d"}"#, #"{"name":"\u00"}"#, #"{"name":"\uZZZZ"}"#,
        #"{"name":"\x"}"#, "{\"name\":\"a\u{01}b\"}", #"{"name":"a"#, #"{"name"}"#, #"{"name":}"#, #"{,}"#, #"{"a":1,}"#,
        #"{"a":1 "b":2}"#, #"{'a':1}"#, #"{a:1}"#, #"{"a":01}"#, #"{"a":-0}"#, #"{"a":-}"#, #"{"a":1.}"#, #"{"a":.5}"#,
        #"{"a":1e5}"#, #"{"a":1E+5}"#, #"{"a":1e-5}"#, #"{"a":1e}"#, #"{"a":-1.25e-300}"#, #"{"a":+1}"#, #"{"a":[1,]}"#, #"{"a":[1,,]}"#, #"{"a":{"b":1,}}"#, #"[,]"#, #"{,"a":1}"#,
        #"{"a":NaN}"#, #"{"a":Infinity}"#, #"{"a":tru}"#, #"{"a":nul}"#, #"{"a":true}x"#, #"{} {}"#, #"{}}"#, #"[]"#,
        #"[1,2]"#, #""text""#, #"12"#, #"true"#, #"  "#, #"["#, #"{"#, #"{"a":[1,2}"#, #"{"a":{"b":1]}"#,
        #"{"externalId":"a","externalId":"b"}"#, #"{"x":1,"x":2}"#, #"{"name":"a\u0000b"}"#, #"{"\u0065mail":"e"}"#,
        #"{"a":"\/"}"#, "{\"name\":\"tab\there\"}", #"{"a":[]}"#, #"{"a":[ ]}"#, #"{"a":{ }}"#, "\u{FEFF}{}",
        #"{"a":1}  "#, #"{"a":0.0e0}"#, #"{"a":-0.5E-0}"#, #"{"name":"multi\u00e9byte\u0301"}"#, #"{"name":"é中😀"}"#,
    ]

    @Test(arguments: edgeCases)
    func edgeCaseReadsLikeJSONDecoder(_ body: String) {
        let bytes = Array(body.utf8)
        #expect(Self.scanner(bytes) == Self.reference(bytes), "body: \(body)")
    }

    /// Two deliberate differences from Foundation: a top-level `null` is JSON that is not an object
    /// (Foundation's decoder called it invalid), and a number beyond `Double`'s range is valid JSON
    /// (RFC 8259 sets no range; `JSONSerialization` refuses it, `JSONDecoder` did not).
    @Test func nullIsNotAnObjectAndHugeNumbersAreJSON() {
        #expect(Self.scanner(Array("null".utf8)) == .notAnObject)
        #expect(Self.scanner(Array(#"{"a":1e400,"name":"x"}"#.utf8)) == .object(
            RawCommandObject(fields: [.name: .string("x")], unknownKeys: ["a"])))
        #expect(Self.scanner(Array(#"{"name":-1e400}"#.utf8)) == .object(RawCommandObject(fields: [.name: .notString])))
    }

    @Test func deepNestingIsRefusedLikeJSONDecoder() {
        for depth in [10, 500, 511, 512, 513, 600, 2000] {
            let body = Array(("{\"a\":" + String(repeating: "[", count: depth) + String(repeating: "]", count: depth) + "}").utf8)
            #expect(Self.scanner(body) == Self.reference(body), "depth \(depth)")
        }
    }

    /// Generated bodies: valid commands, then each mutated by deleting, duplicating or replacing one
    /// byte, which covers broken syntax in every position.
    @Test func generatedBodiesReadLikeJSONDecoder() {
        var random = SeededGenerator(seed: 0x5EED)
        let alphabet = Array(#"{}[]":,\ "abcu0123456789.eE+-tnfrl/"#.utf8) + [0x00, 0x1F, 0x7F, 0xC3, 0xA9]
        var checked = 0
        for _ in 0..<400 {
            let original = Array(Self.randomCommand(&random).utf8)
            var bodies = [original]
            for _ in 0..<8 {
                var mutated = original
                let index = Int.random(in: 0..<mutated.count, using: &random)
                switch Int.random(in: 0..<3, using: &random) {
                case 0: mutated.remove(at: index)
                case 1: mutated.insert(mutated[index], at: index)
                default: mutated[index] = alphabet.randomElement(using: &random)!
                }
                bodies.append(mutated)
            }
            // The scanner runs on valid UTF-8 only (the parser checks it first), like the decoder did.
            for body in bodies where CreateCustomerCommand.isValidUTF8(body) {
                let (scanned, referenced) = (Self.scanner(body), Self.reference(body))
                #expect(scanned == referenced, "body: \(String(decoding: body, as: UTF8.self))")
                checked += 1
            }
        }
        #expect(checked > 3000)
    }

    static func randomCommand(_ random: inout SeededGenerator) -> String {
        let values = [#""plain""#, #""with \"escapes\" and \\ \/ \n""#, #""\u00e9\ud83d\ude00""#, "null", "12", "-3.5e2", "true",
                      "[1,\"x\",null]", #"{"k":{"j":[]}}"#, #""é中""#]
        var keys = CustomerField.allCases.map(\.rawValue).shuffled(using: &random).prefix(Int.random(in: 0...6, using: &random))
        if Bool.random(using: &random) { keys.append("unknown\(Int.random(in: 0...3, using: &random))") }
        let members = keys.map { "\"\($0)\" : \(values.randomElement(using: &random)!)" }
        return "{ " + members.joined(separator: ", ") + " }"
    }
}

/// SplitMix64: the same bodies on every run.
struct SeededGenerator: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var value = state
        value = (value ^ (value >> 30)) &* 0xBF58_476D_1CE4_E5B9
        value = (value ^ (value >> 27)) &* 0x94D0_49BB_1331_11EB
        return value ^ (value >> 31)
    }
}
