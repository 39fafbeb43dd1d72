@testable import CustomerDomain
import Foundation
import PropertyBased
import Testing

@Suite("Timestamps")
struct TimestampTests {
    @Test("formats UTC with milliseconds", arguments: [
        (0, "1970-01-01T00:00:00.000Z"),
        (1_609_459_200_000, "2021-01-01T00:00:00.000Z"),
        (1_747_728_000_125, "2025-05-20T08:00:00.125Z"),
        (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
        (253_402_300_799_999, "9999-12-31T23:59:59.999Z"),
    ] as [(Int64, String)])
    func format(_ milliseconds: Int64, _ text: String) throws {
        let timestamp = Timestamp(millisecondsSince1970: milliseconds)
        #expect(timestamp.iso8601 == text)
        #expect(Timestamp(iso8601: text) == timestamp)
    }

    /// Outside four-digit years (no reply's time is) the year keeps all its digits and its sign.
    @Test(arguments: [
        (253_402_300_800_000, "10000-01-01T00:00:00.000Z"),
        (-62_167_219_200_001, "-1-12-31T23:59:59.999Z"),
    ] as [(Int64, String)])
    func formatsYearsOutsideFourDigits(_ milliseconds: Int64, _ text: String) {
        #expect(Timestamp(millisecondsSince1970: milliseconds).iso8601 == text)
    }

    /// Every time a reply can carry formats as Foundation's fixed-format UTC formatter does, and
    /// parses back to itself.
    @Test func formatsAsFoundationAndParsesBack() async {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "yyyy-MM-dd'T'HH:mm:ss.SSS'Z'"
        let range = Timestamp.validRange.lowerBound.millisecondsSince1970...Timestamp.validRange.upperBound.millisecondsSince1970
        await propertyCheck(count: 2000, input: Gen.int64(in: range)) { milliseconds in
            let timestamp = Timestamp(millisecondsSince1970: milliseconds)
            #expect(timestamp.iso8601 == formatter.string(from: timestamp.date), "\(milliseconds)")
            #expect(Timestamp(iso8601: timestamp.iso8601) == timestamp)
        }
    }

    @Test("parses RFC 3339 variants", arguments: [
        ("2021-01-01T00:00:00Z", 1_609_459_200_000),
        ("2021-01-01T00:00:00.5Z", 1_609_459_200_500),
        ("2021-01-01T00:00:00.123456Z", 1_609_459_200_123),
        ("2021-01-01T02:00:00+02:00", 1_609_459_200_000),
        ("2020-12-31T19:00:00-05:00", 1_609_459_200_000),
    ] as [(String, Int64)])
    func parse(_ text: String, _ milliseconds: Int64) {
        #expect(Timestamp(iso8601: text)?.millisecondsSince1970 == milliseconds)
    }

    @Test("rejects malformed", arguments: [
        "", "2021-01-01", "2021-13-01T00:00:00Z", "2021-02-29T00:00:00Z", "2021-01-01T24:00:00Z",
        "2021-01-01T00:00:00", "2021-01-01T00:00:00.Z", "2021-01-01 00:00:00Z", "2021-01-01T00:00:00Zjunk",
    ])
    func reject(_ text: String) {
        #expect(Timestamp(iso8601: text) == nil)
    }

    @Test func truncatesDatesToMilliseconds() {
        #expect(Timestamp(Date(timeIntervalSince1970: 1.2345)).millisecondsSince1970 == 1234)
        #expect(Timestamp(Date(timeIntervalSince1970: -0.0005)).millisecondsSince1970 == -1)
        #expect(Timestamp(millisecondsSince1970: 5).adding(days: 2)?.millisecondsSince1970 == 172_800_005)
    }
}
