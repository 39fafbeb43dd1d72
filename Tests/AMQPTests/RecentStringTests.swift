@testable import AMQP
import CRabbitMQ
import Glibc
import Testing

/// A delivery's names are made once per run of equal bytes, and always read as their bytes say.
@Suite("Recent string")
struct RecentStringTests {
    @Test func eachNameReadsAsItsBytesWhateverCameBefore() {
        var recent = RecentString()
        // Equal, then one byte different at the end, at the start, longer, shorter, empty,
        // invalid UTF-8 (repaired as `String(amqpBytes:)` repairs it), and back.
        let names: [[UInt8]] = [
            Array("amq.ctag-0123456789abcdef".utf8), Array("amq.ctag-0123456789abcdef".utf8),
            Array("amq.ctag-0123456789abcdeg".utf8), Array("bmq.ctag-0123456789abcdeg".utf8),
            Array("bmq.ctag-0123456789abcdeg-1".utf8), Array("b".utf8), [], [0xFF, 0x41], [0xFF, 0x41],
            Array("amq.ctag-0123456789abcdef".utf8),
        ]
        for name in names {
            var copy = name
            let (read, expected) = copy.withUnsafeMutableBytes { raw in
                let wire = amqp_bytes_t(len: raw.count, bytes: raw.baseAddress)
                return (recent.string(wire), String(amqpBytes: wire))
            }
            #expect(read == expected, "\(name)")
        }
    }
}

/// A delivery's string properties read as their bytes say, whether they repeat the last
/// delivery's (and reuse its strings) or not.
@Suite("Recent property strings")
struct RecentPropertyStringsTests {
    /// Decodes properties holding `values` (content type, reply-to, app id, message id; nil = not set).
    private static func decode(_ values: [String?], _ recent: inout RecentPropertyStrings) -> MessageProperties {
        let copies = values.map { $0.map { strdup($0)! } }
        defer { for copy in copies { free(copy) } }
        func bytes(_ index: Int) -> amqp_bytes_t {
            guard let copy = copies[index] else { return amqp_bytes_t(len: 0, bytes: nil) }
            return amqp_bytes_t(len: strlen(copy), bytes: UnsafeMutableRawPointer(copy))
        }
        var props = amqp_basic_properties_t()
        let flags: [amqp_flags_t] = [CW_FLAG_CONTENT_TYPE, CW_FLAG_REPLY_TO, CW_FLAG_APP_ID, CW_FLAG_MESSAGE_ID]
        for (index, flag) in flags.enumerated() where copies[index] != nil { props._flags |= flag }
        props.content_type = bytes(0)
        props.reply_to = bytes(1)
        props.app_id = bytes(2)
        props.message_id = bytes(3)
        return MessageProperties(props, repeating: &recent)
    }

    @Test func eachDeliverysPropertiesReadAsTheirBytes() {
        var recent = RecentPropertyStrings()
        let deliveries: [[String?]] = [
            ["application/json", "replies.customer-service", "customer-worker-bench", "m-1"],
            ["application/json", "replies.customer-service", "customer-worker-bench", "m-2"],
            ["application/json", nil, "customer-worker-bench", "m-3"],
            ["application/json; charset=utf-8", "replies.customer-service", "another-sending-app", nil],
            [nil, "replies.customer-service", "", "m-5"],
            ["application/json", "replies.customer-service", "customer-worker-bench", "m-1"],
        ]
        for values in deliveries {
            let properties = Self.decode(values, &recent)
            #expect([properties.contentType, properties.replyTo, properties.appID, properties.messageID] == values, "\(values)")
        }
    }
}

/// A delivery's headers read as their bytes say, whether they repeat the last delivery's (and
/// reuse its decoded table) or not.
@Suite("Recent headers")
struct RecentHeadersTests {
    @Test func eachDeliverysHeadersReadAsTheirBytes() {
        var recent = RecentHeaders()
        let arena = EncodingArena()
        // The same table, then one that differs only in a value's last byte, in its length, in
        // a key, in a value's kind, in an integer, a table with more entries, a nested one (not
        // kept), none, and back to the first.
        let tables: [[String: FieldValue]] = [
            ["x-api-key": "sk_test_0123456789abcdef"], ["x-api-key": "sk_test_0123456789abcdef"],
            ["x-api-key": "sk_test_0123456789abcdeg"], ["x-api-key": "sk_test_0123456789abcdefg"],
            ["x-api-kez": "sk_test_0123456789abcdefg"], ["x-api-kez": .bytes(Array("sk_test_0123456789abcdefg".utf8))],
            ["x-attempt": 1], ["x-attempt": 2], ["x-attempt": 2, "x-replayed": true], ["x-attempt": 2, "x-replayed": false],
            ["x-attempt": 2, "x-context": .table(["tenant": "a"])], ["x-attempt": 2, "x-context": .table(["tenant": "b"])],
            [:], ["x-api-key": "sk_test_0123456789abcdef"],
        ]
        for headers in tables {
            defer { arena.reset() }
            #expect(recent.headers(arena.table(headers)) == headers, "\(headers)")
        }
    }

    @Test func headersNestedTooDeepAreRefusedEvenAfterAKeptTable() {
        var recent = RecentHeaders()
        let arena = EncodingArena()
        var deep: FieldValue = "leaf"
        for _ in 0...FieldValue.maximumNesting { deep = .table(["next": deep]) }
        #expect(recent.headers(arena.table(["x-api-key": "sk_test_a"])) == ["x-api-key": "sk_test_a"])
        #expect(recent.headers(arena.table(["x-api-key": "sk_test_a", "x-deep": deep])) == nil)
        #expect(recent.headers(arena.table(["x-api-key": "sk_test_a"])) == ["x-api-key": "sk_test_a"])
    }
}
