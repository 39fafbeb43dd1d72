@testable import CreateCustomer
import CustomerDomain
import Foundation
import PropertyBased
import Testing

/// A created reply rendered from its template is, byte for byte and in both forms, what the
/// JSON writer makes of the same reply: for every `CustomerCreated` shape of the contract, with
/// generated commands, ids and times, from a template recorded from a different reply.
@Suite("Created reply templates")
struct ReplyTemplateTests {
    /// The contract's `CustomerCreated` examples: one per default-plan outcome and subscription shape.
    static func shapes() throws -> [(name: String, reply: CustomerCreated)] {
        let created = try StoredReplyBodyTests.replies().filter { $0.name.hasPrefix("customer-created") }
        return try created.map { ($0.name, try JSONDecoder().decode(CustomerCreated.self, from: Data($0.body))) }
    }

    /// What differs between two replies of one shape.
    struct Variation: Sendable, CustomStringConvertible {
        var fields: [String?]
        var ids: [String]
        var now: Int64
        var startDays: Int?
        var endDays: Int?

        var description: String { "fields \(fields), ids \(ids), now \(now), start +\(startDays.map(String.init) ?? "0"), end \(endDays.map(String.init) ?? "null")" }
    }

    /// `shape` with `variation`'s values in every place a template leaves open.
    static func reply(_ shape: CustomerCreated, _ variation: Variation) -> CustomerCreated {
        var reply = shape
        let now = Timestamp(millisecondsSince1970: variation.now)
        reply.idempotencyKey = variation.ids[0]
        reply.customer.id = variation.ids[1]
        var attributes = CreateCustomerCommand(externalId: variation.fields[0] ?? "")
        for (field, value) in zip(CustomerField.optionalFields, variation.fields.dropFirst()) { attributes[field] = value }
        reply.customer.attributes = attributes
        reply.customer.createdAt = now
        reply.customer.updatedAt = now
        func varied(_ subscription: Subscription) -> Subscription {
            var subscription = subscription
            subscription.id = variation.ids[2]
            subscription.customerId = variation.ids[1]
            subscription.createdAt = now
            subscription.updatedAt = now
            subscription.startDate = variation.startDays.flatMap { now.adding(days: $0) } ?? now
            subscription.endDate = variation.endDays.flatMap { now.adding(days: $0) }
            return subscription
        }
        reply.customer.activeSubscriptions = reply.customer.activeSubscriptions.map(varied)
        reply.customer.upcomingSubscriptions = reply.customer.upcomingSubscriptions.map(varied)
        return reply
    }

    static func values(of reply: CustomerCreated) -> CreatedReplyValues {
        CreatedReplyValues(
            idempotencyKey: reply.idempotencyKey, customerID: reply.customer.id,
            subscription: reply.customer.activeSubscriptions.first ?? reply.customer.upcomingSubscriptions.first,
            now: reply.customer.createdAt, attributes: reply.customer.attributes)
    }

    /// Bytes as text, for a readable failure (the stored form's tokens show as escapes).
    static func text(_ bytes: [UInt8]) -> String {
        String(decoding: bytes, as: UTF8.self).unicodeScalars.map { $0.value < 0x20 ? "\\u{\(String($0.value, radix: 16))}" : String($0) }.joined()
    }

    /// Pieces of text that JSON escapes, multi-byte UTF-8, and the stored form's phrases.
    static let text = Gen<String?>.element(of: [
        "a", "Z", "0", " ", "\"", "\\", "\n", "\u{01}", "\u{1F}", "é", "東", "😀", "null", "true", "false",
        #""name":"#, ",", ":", "{", "[", "/",
    ]).map { $0 ?? "" }.array(of: 0...6).map { $0.joined() }

    static let variations = zip(
        text.optional().array(of: CustomerField.allCases.count), text.array(of: 3),
        Gen.int64(in: Timestamp.validRange.lowerBound.millisecondsSince1970...253_000_000_000_000),
        Gen.int(in: 1...400).optional(valueRate: 0.5), Gen.int(in: 1...400).optional(valueRate: 0.5)
    ).map { value in Variation(fields: value.0, ids: value.1, now: value.2, startDays: value.3, endDays: value.4) }

    @Test func everyShapeRendersAsTheWriterWritesIt() async throws {
        let shapes = try Self.shapes()
        #expect(shapes.count >= 7)
        let tokens = StoredReplyBody.phraseTokens
        await propertyCheck(count: 300, input: Self.variations, Self.variations) { prototypeValues, values in
            for (name, shape) in shapes {
                // The template comes from one reply of the shape, and renders another.
                let template = CustomerCreatedTemplate(Self.reply(shape, prototypeValues), tokens: tokens)
                let reply = Self.reply(shape, values)
                let (json, compact) = template.render(Self.values(of: reply))
                let written = reply.canonicalJSON(compactingWith: tokens)
                #expect(Data(json) == Data(written.json), "\(name): the published reply \(Self.text(json))")
                #expect(Data(compact) == Data(written.compact), "\(name): the stored form \(Self.text(compact))")
                #expect((try? StoredReplyBody.decode(compact)) == json, "\(name): the stored form reads back as the reply")
            }
        }
    }

    /// A template records each value that varies as a slot: a template of one reply renders the
    /// contract's example itself, which shares none of its ids, times or fields.
    @Test func theContractsExamplesRenderFromATemplateOfAnotherReply() throws {
        let other = Variation(fields: Array(repeating: "other", count: CustomerField.allCases.count),
                              ids: ["k", "c", "s"], now: 86_400_000, startDays: 3, endDays: nil)
        for (name, shape) in try Self.shapes() {
            let template = CustomerCreatedTemplate(Self.reply(shape, other), tokens: StoredReplyBody.phraseTokens)
            let (json, _) = template.render(Self.values(of: shape))
            #expect(Data(json) == Data(shape.canonicalJSON()), "\(name): \(Self.text(json))")
        }
    }
}
