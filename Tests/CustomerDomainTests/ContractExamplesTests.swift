@testable import CustomerDomain
import Foundation
import Testing

/// The example files under schemas/examples, which another part of the project maintains.
enum ContractExamples {
    static let folder = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .appendingPathComponent("schemas/examples")

    static let kinds = ["create-customer", "customer-created", "customer-create-failed", "plan-catalog"]

    static func files(_ kind: String) -> [URL] {
        let names = (try? FileManager.default.contentsOfDirectory(atPath: folder.path)) ?? []
        return names.filter { $0.hasPrefix(kind + ".") && $0.hasSuffix(".json") }.sorted()
            .map { folder.appendingPathComponent($0) }
    }

    static func bytes(_ url: URL) throws -> [UInt8] {
        Array(try Data(contentsOf: url))
    }
}

/// Removes whitespace outside strings: a pretty-printed file becomes the compact form, keys untouched.
func minified(_ bytes: [UInt8]) -> [UInt8] {
    var output: [UInt8] = []
    var inString = false
    var escaped = false
    for byte in bytes {
        if inString {
            if escaped { escaped = false } else if byte == UInt8(ascii: "\\") { escaped = true } else if byte == UInt8(ascii: "\"") { inString = false }
            output.append(byte)
        } else if byte == UInt8(ascii: "\"") {
            inString = true
            output.append(byte)
        } else if ![0x20, 0x0A, 0x0D, 0x09].contains(byte) {
            output.append(byte)
        }
    }
    return output
}

/// A parsed JSON document where a null member and a missing one are the same (commands, catalogs).
func withoutNullMembers(_ value: JSONValue?) -> JSONValue? {
    switch value {
    case .object(let members)?: .object(members.filter { $0.value != .null }.mapValues { withoutNullMembers($0)! })
    case .array(let items)?: .array(items.map { withoutNullMembers($0)! })
    default: value
    }
}

@Suite("Contract examples round-trip through the Swift types")
struct ContractExamplesTests {
    @Test("every kind has examples", arguments: ContractExamples.kinds)
    func kindHasExamples(_ kind: String) {
        #expect(!ContractExamples.files(kind).isEmpty, "no \(kind).*.json in \(ContractExamples.folder.path)")
    }

    /// Replies are compared byte for byte with the minified file: key order, every key, nulls.
    @Test func successRepliesReencodeToTheSameBytes() throws {
        for url in ContractExamples.files("customer-created") {
            let original = try ContractExamples.bytes(url)
            let reply = try JSONDecoder().decode(CustomerCreated.self, from: Data(original))
            #expect(reply.canonicalJSON() == minified(original), "\(url.lastPathComponent)")
            #expect(reply.customer.attributes.externalId == reply.customer.attributes[.externalId])
        }
    }

    @Test func failureRepliesReencodeToTheSameBytes() throws {
        for url in ContractExamples.files("customer-create-failed") {
            let original = try ContractExamples.bytes(url)
            let reply = try JSONDecoder().decode(CustomerCreateFailed.self, from: Data(original))
            #expect(reply.canonicalJSON() == minified(original), "\(url.lastPathComponent)")
        }
    }

    /// Commands may leave optional keys out or send null, and the worker upper-cases codes.
    @Test func commandsRoundTripAndValidate() throws {
        for url in ContractExamples.files("create-customer") {
            let original = try ContractExamples.bytes(url)
            let decoded = try JSONDecoder().decode(CreateCustomerCommand.self, from: Data(original))
            #expect(withoutNullMembers(JSONValue.parse(decoded.canonicalJSON())) == withoutNullMembers(JSONValue.parse(original)),
                    "\(url.lastPathComponent)")
            let parsed = CreateCustomerCommand.parse(body: original, contentType: "application/json")
            #expect(throws: Never.self, "\(url.lastPathComponent)") { try parsed.get() }
        }
    }

    @Test func catalogsRoundTripAndValidate() throws {
        for url in ContractExamples.files("plan-catalog") {
            let original = try ContractExamples.bytes(url)
            let decoded = try JSONDecoder().decode(PlanCatalog.self, from: Data(original))
            #expect(withoutNullMembers(JSONValue.parse(decoded.canonicalJSON())) == withoutNullMembers(JSONValue.parse(original)),
                    "\(url.lastPathComponent)")
            let validated = PlanCatalog.parse(original)
            #expect(throws: Never.self, "\(url.lastPathComponent)") { try validated.get() }
            #expect((try? validated.get()) == decoded)
        }
    }

    @Test func encodableMatchesTheCanonicalBytes() throws {
        for url in ContractExamples.files("customer-created") {
            let reply = try JSONDecoder().decode(CustomerCreated.self, from: Data(try ContractExamples.bytes(url)))
            let viaEncoder = try JSONEncoder().encode(reply)
            #expect(JSONValue.parse(Array(viaEncoder)) == JSONValue.parse(reply.canonicalJSON()))
        }
    }

    @Test func decodingTheWrongReplyTypeFails() throws {
        guard let url = ContractExamples.files("customer-created").first else { return }
        #expect(throws: DecodingError.self) {
            try JSONDecoder().decode(CustomerCreateFailed.self, from: Data(try ContractExamples.bytes(url)))
        }
    }
}

@Suite("Canonical JSON")
struct CanonicalJSONTests {
    @Test func writesEveryKeyInOrderWithNulls() {
        let reply = CustomerCreateFailed(
            idempotencyKey: nil, error: CustomerCreateError(code: .unauthorized, message: "No \"key\"\n\u{1}/é"))
        #expect(String(decoding: reply.canonicalJSON(), as: UTF8.self)
            == #"{"type":"CustomerCreateFailed","idempotencyKey":null,"error":{"code":"unauthorized","message":"No \"key\"\n\u0001/é","fields":[],"existingCustomerId":null}}"#)
    }

    @Test func customerWritesAllAttributeKeys() throws {
        let now = Timestamp(millisecondsSince1970: 0)
        let customer = Customer(id: "c", merchantId: "m", attributes: CreateCustomerCommand(externalId: "e"),
                                subscriptions: [], now: now)
        guard case .object(let members)? = JSONValue.parse(customer.canonicalJSON()) else {
            Issue.record("not an object")
            return
        }
        #expect(members.count == 2 + CustomerField.allCases.count + 8)
        #expect(members["stripeId"] == .null)
        #expect(members["createdAt"] == .string("1970-01-01T00:00:00.000Z"))
    }
}
