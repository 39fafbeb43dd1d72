@testable import CreateCustomer
import CustomerDomain
import Foundation
import Testing

/// The stored form of a record's reply: whatever the reply, decoding its stored form gives back
/// its exact bytes; the replies of the contract shrink; a stored form this worker does not write
/// is an error, never a guess.
@Suite("Stored reply bodies")
struct StoredReplyBodyTests {
    static let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../../schemas/examples").standardizedFileURL

    /// Each reply example of the contract, compact as the worker publishes it.
    static func replies() throws -> [(name: String, body: [UInt8])] {
        let names = try FileManager.default.contentsOfDirectory(atPath: examples.path)
            .filter { $0.hasPrefix("customer-") && $0.hasSuffix(".json") }.sorted()
        return try names.map { name in
            let object = try JSONSerialization.jsonObject(with: Data(contentsOf: examples.appendingPathComponent(name)))
            return (name, Array(try JSONSerialization.data(withJSONObject: object, options: [.withoutEscapingSlashes])))
        }
    }

    @Test func theContractsRepliesRoundTripAndShrink() throws {
        let replies = try Self.replies()
        #expect(replies.count >= 15)
        for (name, body) in replies {
            let stored = StoredReplyBody.encode(body)
            #expect(Array(stored.prefix(2)) == [0x00, 0x01], "\(name): the compact form")
            #expect(try StoredReplyBody.decode(stored) == body, "\(name)")
            if name.hasPrefix("customer-created") {
                #expect(stored.count * 10 < body.count * 7, "\(name): \(stored.count) of \(body.count) bytes")
            }
        }
    }

    /// The stored form the reply writer writes with the reply (`phraseTokens`) is, for every
    /// `CustomerCreated` of the contract, exactly what `encode` makes of the reply, and the reply
    /// itself is unchanged. Values holding `null`, `true` or `false` after JSON punctuation (which
    /// `encode` may replace inside a string, and the writer does not) still decode to the reply.
    @Test func theWritersStoredFormIsTheEncodersAndDecodesToTheReply() throws {
        var created = try Self.replies().filter { $0.name.hasPrefix("customer-created") }
        #expect(created.count >= 5)
        let tricky = try JSONDecoder().decode(CustomerCreated.self, from: Data(created[0].body))
        var values = tricky
        values.customer.attributes.name = #"a,null:[true{false "quoted" \ null"#
        values.customer.attributes.billingCity = "null"
        created.append(("tricky values", values.canonicalJSON()))
        for (name, body) in created {
            let reply = try JSONDecoder().decode(CustomerCreated.self, from: Data(body))
            let (json, stored) = reply.canonicalJSON(compactingWith: StoredReplyBody.phraseTokens)
            #expect(json == reply.canonicalJSON(), "\(name): the reply's bytes")
            #expect(try StoredReplyBody.decode(stored) == json, "\(name): the stored form reads back as the reply")
            if name != "tricky values" {
                #expect(stored == StoredReplyBody.encode(json), "\(name): what encode makes of the reply")
            }
            #expect(stored.count * 10 < json.count * 7, "\(name): \(stored.count) of \(json.count) bytes")
        }
    }

    /// The examples as written (indented: newlines, which JSON allows between tokens) hold bytes
    /// below 0x20, so they are stored as they are, behind their marker.
    @Test func aReplyWithControlBytesIsStoredAsItIs() throws {
        let indented = Array(try Data(contentsOf: Self.examples.appendingPathComponent("customer-created.subscribed-paid.json")))
        let stored = StoredReplyBody.encode(indented)
        #expect(stored == [0x00, 0x00] + indented)
        #expect(try StoredReplyBody.decode(stored) == indented)
        #expect(try StoredReplyBody.decode(StoredReplyBody.encode([0x00, 0x01, 0x02])) == [0x00, 0x01, 0x02])
        #expect(try StoredReplyBody.decode(StoredReplyBody.encode([])) == [])
    }

    /// Records written before the compact form hold the reply itself.
    @Test func aRecordOfTheOldFormIsTheReplyItself() throws {
        let reply = Array(#"{"type":"CustomerCreated","idempotencyKey":"k"}"#.utf8)
        #expect(try StoredReplyBody.decode(reply) == reply)
    }

    /// Bodies made of the table's phrases, parts of them, JSON's punctuation, letters and UTF-8's
    /// high bytes, sometimes a control byte: every one comes back exactly.
    @Test func generatedBodiesRoundTrip() throws {
        // Knuth's MMIX linear congruential steps from a fixed seed: the same cases on every run.
        var state: UInt64 = 0x5702_ED
        func below(_ bound: Int) -> Int {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return Int((state >> 33) % UInt64(bound))
        }
        let phrases = StoredReplyBody.phrasesV1.map { Array($0.utf8) }
        let pieces: [[UInt8]] = ["{", "}", ",", "\"", ":", "[", "]", "\\\"", "nul", "tru", "fals", "a", "Z", "0", " "].map { Array($0.utf8) }
        for _ in 0..<3000 {
            var body: [UInt8] = []
            for _ in 0..<below(61) {
                switch below(10) {
                case 0...3: body += phrases[below(phrases.count)]
                case 4: let phrase = phrases[below(phrases.count)]; body += phrase.prefix(below(phrase.count + 1))
                case 5...7: body += pieces[below(pieces.count)]
                case 8: body.append(UInt8(0x80 + below(0x80)))
                default: body.append(below(20) == 0 ? UInt8(below(0x20)) : 0x7E)
                }
            }
            let stored = StoredReplyBody.encode(body)
            #expect(try StoredReplyBody.decode(stored) == body, "\(body)")
            #expect(stored[1] == (body.contains { $0 < 0x20 } ? 0x00 : 0x01))
        }
    }

    @Test(arguments: [
        [0x00], [0x00, 0x02], [0x00, 0x01, 0x00], [0x00, 0x01, 0x1F], [0x00, 0x01, 0x1F, 0x05], [0x00, 0x01, 0x1F, 0xC8],
    ] as [[UInt8]])
    func aStoredFormThisWorkerDoesNotWriteIsAnError(_ stored: [UInt8]) {
        #expect(throws: UndecodableStoredValue.self) { try StoredReplyBody.decode(stored) }
    }

    /// The table is part of the stored format: records written with it must read the same forever.
    @Test func version1sPhrasesNeverChange() {
        var hash: UInt64 = 0xCBF2_9CE4_8422_2325  // FNV-1a over the phrases, one per line
        for byte in StoredReplyBody.phrasesV1.joined(separator: "\n").utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x100_0000_01B3
        }
        #expect(StoredReplyBody.phrasesV1.count == 58)
        #expect(hash == 0x1936_8534_8591_1C8D)
    }
}
