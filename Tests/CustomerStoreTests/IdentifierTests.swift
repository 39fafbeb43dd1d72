@testable import CreateCustomer
import CustomerDomain
import Foundation
import BrokerTestSupport
import Testing

/// Minted ids: lowercase UUIDv7 strings, time-ordered by their millisecond prefix, unique.
@Suite(.closesResources) struct IdentifierTests {
    @Test func idsAreLowercaseVersionSevenUUIDsOfTheirMillisecond() throws {
        let now = Timestamp(millisecondsSince1970: 1_764_000_000_123)
        let id = newIdentifier(now: now)
        let uuid = try #require(UUID(uuidString: id), "not a UUID: \(id)")
        #expect(uuid.uuidString.lowercased() == id)
        #expect(id.count == 36)
        let bytes = withUnsafeBytes(of: uuid.uuid) { Array($0) }
        #expect(bytes[6] >> 4 == 7, "version 7")
        #expect(bytes[8] >> 6 == 0b10, "RFC 9562 variant")
        let milliseconds = bytes[0..<6].reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        #expect(milliseconds == 1_764_000_000_123)
    }

    @Test func idsAreUniqueAndOrderedByTime() {
        let ids = (0..<10_000).map { newIdentifier(now: Timestamp(millisecondsSince1970: 1_764_000_000_000 + Int64($0 / 100))) }
        #expect(Set(ids).count == ids.count)
        let earlier = newIdentifier(now: Timestamp(millisecondsSince1970: 1_000))
        let later = newIdentifier(now: Timestamp(millisecondsSince1970: 2_000))
        #expect(earlier < later, "ids sort by their time")
    }

    @Test func theFormatterWritesEveryByte() {
        #expect(lowercaseUUID(high: 0x0123_4567_89AB_CDEF, low: 0xFEDC_BA98_7654_3210) == "01234567-89ab-cdef-fedc-ba9876543210")
        #expect(lowercaseUUID(high: 0, low: 0) == "00000000-0000-0000-0000-000000000000")
    }
}
