@testable import CustomerDomain
import Crypto
import PropertyBased
import Testing

/// `CreateCustomerCommand` keeps its optional fields in one buffer of bytes: set in any order, to
/// any value or none, it reads back, compares, hashes and fingerprints as seventeen strings would.
@Suite("Create-customer command: the fields' storage")
struct CommandStorageTests {
    /// Values around the storage's edges: none, the empty string, one byte, multi-byte UTF-8, a
    /// long value, and one that differs from another only in its last byte.
    static let values: [String?] = [nil, "", "a", "Zoë ✓ 東京", String(repeating: "x", count: 300), "ab", "aa"]

    /// Assignments as (field, value) pairs, in the order generated (repeats and any order).
    static let assignments = Gen.int(in: 0...(CustomerField.allCases.count * values.count - 1)).array(of: 0...40)
        .map { codes in codes.map { (CustomerField.allCases[$0 / values.count], values[$0 % values.count]) } }

    @Test func fieldsSetInAnyOrderReadBackAndCompareAsStrings() async {
        await propertyCheck(count: 2000, input: Self.assignments) { assignments in
            var command = CreateCustomerCommand(externalId: "ext-1")
            var model: [CustomerField: String] = [.externalId: "ext-1"]
            for (field, value) in assignments {
                command[field] = value
                if field != .externalId || value != nil { model[field] = value }
            }
            for field in CustomerField.allCases {
                #expect(command[field] == model[field], "\(field) after \(assignments)")
                let bytes = command.withUTF8(field) { $0.map(Array.init) }
                #expect(bytes == model[field].map { Array($0.utf8) }, "\(field) bytes after \(assignments)")
            }
            // The same values set in contract order: equal, the same hash and fingerprint.
            var inOrder = CreateCustomerCommand(externalId: model[.externalId]!)
            for field in CustomerField.optionalFields { inOrder[field] = model[field] }
            #expect(command == inOrder)
            #expect(command.hashValue == inOrder.hashValue)
            #expect(command.fingerprint == Self.referenceFingerprint(model))
            // One field changed: no longer equal, and another fingerprint.
            var changed = command
            changed.stripeId = (model[.stripeId] ?? "") + "!"
            #expect(changed != command)
            #expect(changed.fingerprint != command.fingerprint)
        }
    }

    /// The fingerprint's definition, field by field over strings: a tag byte, then for a value its
    /// UTF-8 length (4 bytes, big-endian) and bytes.
    static func referenceFingerprint(_ model: [CustomerField: String]) -> String {
        var encoding: [UInt8] = []
        for field in CustomerField.allCases {
            guard let value = model[field] else {
                encoding.append(0)
                continue
            }
            let count = UInt32(value.utf8.count)
            encoding += [1, UInt8(count >> 24), UInt8(count >> 16 & 0xFF), UInt8(count >> 8 & 0xFF), UInt8(count & 0xFF)]
            encoding += Array(value.utf8)
        }
        return SHA256.hash(data: encoding).map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
    }
}
