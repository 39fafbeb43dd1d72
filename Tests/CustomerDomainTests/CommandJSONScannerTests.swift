import Foundation
import Testing

@testable import CustomerDomain

/// The command scanner must read a body as Foundation does: invalid wherever `JSONSerialization`
/// (which checks every value) refuses it, else exactly what `JSONDecoder` (the decoder it replaced)
/// made of it — the same keys and values, or "not an object". `JSONDecoder` alone is no reference
/// for validity: it never checks values it is not asked for, so it took `{"x": -3..e2}` for an
/// object with an unknown key. Checked on hand-picked edge cases and many generated bodies.
///
/// The deliberate differences, each applied to the reference below and tested on its own:
/// 1. a member name given twice in one object (at any depth) is `duplicateKey` (Foundation keeps
///    one of the values); the contract is strict JSON, and other parsers read the last value;
/// 2. a comma before `}` or `]` is `trailingComma` (Foundation accepts it);
/// 3. a top-level `null` is JSON that is not an object (Foundation's decoder called it invalid);
/// 4. a number beyond `Double`'s range is valid JSON (RFC 8259 sets no range).
/// 1 and 2 are computed by `StrictJSONReference`, a token walk that shares no code with the scanner.
@Suite struct CommandJSONScannerTests {
    /// What `JSONDecoder` makes of a body, in the scanner's terms.
    enum Reading: Equatable {
        case object(RawCommandObject)
        case notAnObject
        case invalidJSON
        case duplicateKey(String)
        case trailingComma
    }

    static func scanner(_ body: [UInt8]) -> Reading {
        switch CommandJSONScanner.scan(body) {
        case .success(let object): .object(object)
        case .failure(.notAnObject): .notAnObject
        case .failure(.invalidJSON): .invalidJSON
        case .failure(.duplicateKey(let key)): .duplicateKey(key)
        case .failure(.trailingComma): .trailingComma
        }
    }

    /// Foundation's reading, with differences 1 and 2 applied to bodies it reads as JSON.
    static func reference(_ body: [UInt8]) -> Reading {
        guard (try? JSONSerialization.jsonObject(with: Data(body), options: [.fragmentsAllowed])) != nil else {
            return .invalidJSON
        }
        if let violation = StrictJSONReference.firstViolation(body) { return violation }
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
                return .string(FieldText(try container.decode(String.self, forKey: key)))
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
    @Test func eachFieldsPositionIsItsPlaceInAllCases() {
        #expect(CustomerField.allCases.map(\.position) == Array(CustomerField.allCases.indices))
        #expect(CustomerField.allCases.count <= UInt32.bitWidth, "the scanner notes known fields as bits of a UInt32")
    }

    @Test func aKeyNamesTheFieldItsRawValueNames() {
        for field in CustomerField.allCases {
            #expect(CustomerField(key: field.rawValue) == field)
            // Near misses of every length: one byte more, one less, another case.
            #expect(CustomerField(key: field.rawValue + "x") == nil)
            #expect(CustomerField(key: String(field.rawValue.dropLast())) == nil)
            #expect(CustomerField(key: field.rawValue.uppercased()) == nil)
        }
        for key in ["", "billingAddress3", "shippingAddress0", "é", String(repeating: "n", count: 200), "name\u{0}"] {
            #expect(CustomerField(key: key) == CustomerField(rawValue: key), "\(key)")
        }
    }

    @Test func aKnownFieldGivenTwiceIsADuplicateLikeAnyKey() {
        #expect(Self.scanner(Array(#"{"name":"a","email":null,"name":"b"}"#.utf8)) == .duplicateKey("name"))
        #expect(Self.scanner(Array(#"{"x":1,"name":"a","x":2,"name":"b"}"#.utf8)) == .duplicateKey("x"))
        #expect(Self.scanner(Array(#"{"name":"a","x":1,"name":"b","x":2}"#.utf8)) == .duplicateKey("name"))
    }

    @Test func nullIsNotAnObjectAndHugeNumbersAreJSON() {
        #expect(Self.scanner(Array("null".utf8)) == .notAnObject)
        #expect(Self.scanner(Array(#"{"a":1e400,"name":"x"}"#.utf8)) == .object(
            RawCommandObject(fields: [.name: .string("x")], unknownKeys: ["a"])))
        #expect(Self.scanner(Array(#"{"name":-1e400}"#.utf8)) == .object(RawCommandObject(fields: [.name: .notString])))
    }

    @Test func duplicateKeysAnywhereAndTrailingCommasAreRefused() {
        #expect(Self.scanner(Array(#"{"externalId":"dk-first","name":"x","externalId":"dk-last"}"#.utf8)) == .duplicateKey("externalId"))
        #expect(Self.scanner(Array(#"{"zz":1,"zz":2}"#.utf8)) == .duplicateKey("zz"), "unknown keys too")
        #expect(Self.scanner(Array(#"{"a":{"b":[{"c":1,"c":2}]}}"#.utf8)) == .duplicateKey("c"), "at any depth")
        #expect(Self.scanner(Array(#"{"email":"a@b.co","\u0065mail":"c@d.co"}"#.utf8)) == .duplicateKey("email"), "compared unescaped")
        #expect(Self.scanner(Array(#"{"a":{"k":1},"b":{"k":1}}"#.utf8)) == .object(RawCommandObject(unknownKeys: ["a", "b"])),
                "the same key in two objects is no duplicate")
        #expect(Self.scanner(Array(#"{"externalId":"a",}"#.utf8)) == .trailingComma)
        #expect(Self.scanner(Array(#"{"externalId":"a","x":[1, ] }"#.utf8)) == .trailingComma)
        #expect(Self.scanner(Array(#"[1,]"#.utf8)) == .trailingComma)
        #expect(Self.scanner(Array(#"{"a":1,"a":2"#.utf8)) == .invalidJSON, "syntax first")
        guard case .failure(let rejection) = RawCommandObject.decode(Array(#"{"externalId":"x","externalId":"y"}"#.utf8)) else {
            Issue.record("a duplicate key was accepted")
            return
        }
        #expect(rejection.code == .malformedMessage)
        #expect(rejection.message.contains(#""externalId""#), "names the key: \(rejection.message)")
    }

    /// One hash-set insert per key: 20 times the keys take about 18 times the time (a debug build
    /// on an idle machine), where a quadratic check takes about 390 times (measured with a linear
    /// search in place of the set: 2·10⁸ comparisons for 20,000 keys). The bound, 100, leaves a
    /// factor of 4 or more on each side. Time is the thread's CPU time, not the clock's: with
    /// the suite's tests running in parallel on two cores, a 30 ms scan waited for the CPU so
    /// often that the clock made the ratio 44 and 106 in two CI runs. The scan is synchronous, so
    /// it runs on one thread from start to end.
    @Test func duplicateDetectionIsLinear() {
        func body(_ count: Int) -> [UInt8] {
            Array(("{" + (0..<count).map { "\"k\($0)\":0" }.joined(separator: ",") + "}").utf8)
        }
        func cpuTime(_ work: () -> Void) -> Duration {
            var start = timespec(), end = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &start)
            work()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &end)
            return .seconds(end.tv_sec - start.tv_sec) + .nanoseconds(end.tv_nsec - start.tv_nsec)
        }
        let small = body(1_000), large = body(20_000)
        var smallTime = Duration.seconds(3600), largeTime = Duration.seconds(3600)
        for _ in 0..<5 {
            smallTime = min(smallTime, cpuTime { _ = Self.scanner(small) })
            largeTime = min(largeTime, cpuTime { _ = Self.scanner(large) })
        }
        #expect(Self.scanner(large) != .invalidJSON)
        #expect(largeTime < smallTime * 100, "20× the keys took \(largeTime / smallTime)× the CPU time")
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
        if Int.random(in: 0..<8, using: &random) == 0, let repeated = keys.randomElement(using: &random) { keys.append(repeated) }
        let members = keys.map { "\"\($0)\" : \(values.randomElement(using: &random)!)" }
        return "{ " + members.joined(separator: ", ") + " }"
    }
}

/// Duplicate keys and trailing commas in a body Foundation reads as JSON, found by walking its
/// tokens: strings (decoded by `JSONSerialization`, so `"\u0065"` equals `"e"`) and structure.
enum StrictJSONReference {
    static func firstViolation(_ body: [UInt8]) -> CommandJSONScannerTests.Reading? {
        var objects: [Set<String>?] = []  // nil for an array
        var lastSignificant: UInt8 = 0
        var index = 0
        while index < body.count {
            let byte = body[index]
            switch byte {
            case UInt8(ascii: "\""):
                var end = index + 1
                while body[end] != UInt8(ascii: "\"") { end += body[end] == UInt8(ascii: "\\") ? 2 : 1 }
                let token = Array(body[index...end])
                index = end
                var next = end + 1
                while next < body.count, [0x20, 0x09, 0x0A, 0x0D].contains(body[next]) { next += 1 }
                if next < body.count, body[next] == UInt8(ascii: ":"), let top = objects.last, var keys = top {
                    let key = (try! JSONSerialization.jsonObject(with: Data([UInt8(ascii: "[")] + token + [UInt8(ascii: "]")]))
                        as! [String])[0]
                    if !keys.insert(key).inserted { return .duplicateKey(key) }
                    objects[objects.count - 1] = keys
                }
                lastSignificant = UInt8(ascii: "\"")
            case UInt8(ascii: "{"): objects.append(Set<String>()); lastSignificant = byte
            case UInt8(ascii: "["): objects.append(nil); lastSignificant = byte
            case UInt8(ascii: "}"), UInt8(ascii: "]"):
                if lastSignificant == UInt8(ascii: ",") { return .trailingComma }
                objects.removeLast(); lastSignificant = byte
            case 0x20, 0x09, 0x0A, 0x0D: break
            default: lastSignificant = byte
            }
            index += 1
        }
        return nil
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
