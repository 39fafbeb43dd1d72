@testable import AMQP
import CRabbitMQ
import CustomerDomain
import BrokerTestSupport
import Testing

/// The headers' nesting limit, exactly, without a broker: decoded up to `FieldValue.maximumNesting`
/// levels, refused one level deeper, and 20,000 levels are checked without recursion.
@Suite(.closesResources) struct HeaderNestingTests {
    @Test(arguments: [DeepHeaders.Kind.tables, .arrays])
    func headersAreDecodedUpToTheLimitOnly(_ kind: DeepHeaders.Kind) {
        for (depth, readable) in [(2, true), (FieldValue.maximumNesting, true), (FieldValue.maximumNesting + 1, false), (20_000, false)] {
            let headers = NestedHeaders(kind, depth: depth, apiKey: "sk_test")
            var properties = amqp_basic_properties_t()
            properties._flags = CW_FLAG_HEADERS
            properties.headers = headers.table
            let decoded = withExtendedLifetime(headers) { MessageProperties(properties) }
            #expect(decoded.headersTooDeep == !readable, "\(kind), depth \(depth)")
            #expect(decoded.headers["x-api-key"] == (readable ? .string("sk_test") : nil), "\(kind), depth \(depth)")
        }
    }

    @Test func theRejectionNamesTheLimitTheDecoderUses() {
        #expect(CommandRejection.headersTooDeep.message.contains("\(FieldValue.maximumNesting) levels"))
        #expect(CommandRejection.headersTooDeep.code == .malformedMessage)
    }
}
