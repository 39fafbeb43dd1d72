@testable import AMQP
import CRabbitMQ
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
