import Foundation

/// An instant with millisecond precision, the precision of the wire format and of the database.
///
/// `Date` is a floating-point number of seconds, so two dates that print the same can still differ;
/// comparing whole milliseconds avoids that.
public struct Timestamp: Hashable, Comparable, Sendable {
    public var millisecondsSince1970: Int64

    public init(millisecondsSince1970: Int64) {
        self.millisecondsSince1970 = millisecondsSince1970
    }

    /// Truncates `date` to whole milliseconds (towards the past, also before 1970).
    public init(_ date: Date) {
        millisecondsSince1970 = Int64((date.timeIntervalSince1970 * 1000).rounded(.down))
    }

    public var date: Date {
        Date(timeIntervalSince1970: Double(millisecondsSince1970) / 1000)
    }

    public static func < (lhs: Timestamp, rhs: Timestamp) -> Bool {
        lhs.millisecondsSince1970 < rhs.millisecondsSince1970
    }

    static let millisecondsPerDay: Int64 = 86_400_000

    /// 1970-01-01T00:00:00.000Z … 9999-12-31T23:59:59.999Z: what the wire format and the
    /// database can hold; arithmetic that leaves it is an error, never a trap.
    public static let validRange = Timestamp(millisecondsSince1970: 0)...Timestamp(millisecondsSince1970: 253_402_300_799_999)

    /// `days` later, or nil when the result overflows or leaves `validRange` (checked arithmetic:
    /// whatever a database row holds, this cannot trap).
    public func adding(days: Int) -> Timestamp? {
        let (offset, overflowed) = Int64(clamping: days).multipliedReportingOverflow(by: Self.millisecondsPerDay)
        let (sum, overflowedSum) = millisecondsSince1970.addingReportingOverflow(offset)
        guard !overflowed, !overflowedSum else { return nil }
        let result = Timestamp(millisecondsSince1970: sum)
        return Self.validRange.contains(result) ? result : nil
    }
}

// MARK: - ISO 8601

extension Timestamp {
    /// `2021-01-01T00:00:00.000Z`: always UTC, always three fraction digits.
    public var iso8601: String {
        var bytes: [UInt8] = []
        appendISO8601(to: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Writes `iso8601` as ASCII bytes without building strings: replies carry several timestamps.
    /// The bytes are written into place, then appended at once (appended a byte at a time, each
    /// append checked the array's capacity).
    public func appendISO8601(to bytes: inout [UInt8]) {
        let (days, msOfDay) = millisecondsSince1970.floorDivided(by: Self.millisecondsPerDay)
        let (year, month, day) = CivilDate.from(daysSince1970: days)
        withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 24) { buffer in
            var position = 0
            /// `value` zero-padded to `width` digits, then `separator`.
            func digits(_ value: Int, _ width: Int, then separator: UInt8) {
                var value = value
                for offset in stride(from: width - 1, through: 0, by: -1) {
                    buffer[position + offset] = UInt8(ascii: "0") + UInt8(value % 10)
                    value /= 10
                }
                buffer[position + width] = separator
                position += width + 1
            }
            if (0..<10_000).contains(year) {
                digits(year, 4, then: UInt8(ascii: "-"))
            } else {
                // Outside four-digit years (never a valid reply's time): all the year's digits.
                bytes.append(contentsOf: String(year).utf8)
                buffer[0] = UInt8(ascii: "-")
                position = 1
            }
            digits(month, 2, then: UInt8(ascii: "-"))
            digits(day, 2, then: UInt8(ascii: "T"))
            digits(Int(msOfDay / 3_600_000), 2, then: UInt8(ascii: ":"))
            digits(Int(msOfDay / 60_000 % 60), 2, then: UInt8(ascii: ":"))
            digits(Int(msOfDay / 1000 % 60), 2, then: UInt8(ascii: "."))
            digits(Int(msOfDay % 1000), 3, then: UInt8(ascii: "Z"))
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: buffer[..<position]))
        }
    }

    /// Parses an RFC 3339 date-time: `YYYY-MM-DDTHH:MM:SS`, an optional fraction (kept to
    /// milliseconds, extra digits truncated) and `Z` or a `±HH:MM` offset. Returns nil otherwise.
    public init?(iso8601 text: String) {
        var scanner = DigitScanner(Array(text.utf8))
        guard let year = scanner.number(digits: 4), scanner.skip("-"),
              let month = scanner.number(digits: 2), scanner.skip("-"),
              let day = scanner.number(digits: 2), scanner.skip("T") || scanner.skip("t"),
              let hour = scanner.number(digits: 2), scanner.skip(":"),
              let minute = scanner.number(digits: 2), scanner.skip(":"),
              let second = scanner.number(digits: 2),
              (1...12).contains(month), day >= 1, day <= CivilDate.daysIn(month: month, year: year),
              hour < 24, minute < 60, second < 60
        else { return nil }
        guard let millisecond = scanner.fractionMilliseconds(),
              let offsetMinutes = scanner.offsetMinutes(), scanner.atEnd else { return nil }
        let days = Int64(CivilDate.daysSince1970(year: year, month: month, day: day))
        let secondsOfDay = Int64(hour * 3600 + minute * 60 + second - offsetMinutes * 60)
        millisecondsSince1970 = days * Self.millisecondsPerDay + secondsOfDay * 1000 + Int64(millisecond)
    }
}

extension Timestamp: Codable {
    public init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        let text = try container.decode(String.self)
        guard let value = Timestamp(iso8601: text) else {
            throw DecodingError.dataCorruptedError(
                in: container, debugDescription: "expected an ISO 8601 timestamp, got \(text)")
        }
        self = value
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.singleValueContainer()
        try container.encode(iso8601)
    }
}

extension Int64 {
    /// Division rounding towards negative infinity, with a non-negative remainder.
    fileprivate func floorDivided(by divisor: Int64) -> (quotient: Int64, remainder: Int64) {
        let remainder = self % divisor
        return remainder < 0 ? (self / divisor - 1, remainder + divisor) : (self / divisor, remainder)
    }
}

/// Proleptic Gregorian calendar arithmetic (Howard Hinnant's days_from_civil / civil_from_days),
/// so formatting needs no Calendar, locale or time-zone database.
private enum CivilDate {
    static func daysSince1970(year: Int, month: Int, day: Int) -> Int {
        let y = month <= 2 ? year - 1 : year
        let era = (y >= 0 ? y : y - 399) / 400
        let yearOfEra = y - era * 400
        let dayOfYear = (153 * (month > 2 ? month - 3 : month + 9) + 2) / 5 + day - 1
        let dayOfEra = yearOfEra * 365 + yearOfEra / 4 - yearOfEra / 100 + dayOfYear
        return era * 146_097 + dayOfEra - 719_468
    }

    static func from(daysSince1970 days: Int64) -> (year: Int, month: Int, day: Int) {
        let z = Int(days) + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        return (yearOfEra + era * 400 + (month <= 2 ? 1 : 0), month, day)
    }

    static func daysIn(month: Int, year: Int) -> Int {
        switch month {
        case 2: isLeap(year) ? 29 : 28
        case 4, 6, 9, 11: 30
        default: 31
        }
    }

    private static func isLeap(_ year: Int) -> Bool {
        year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
    }
}

/// Reads fixed-width ASCII numbers out of a timestamp.
private struct DigitScanner {
    private let bytes: [UInt8]
    private var index = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var atEnd: Bool { index == bytes.count }

    mutating func skip(_ character: Unicode.Scalar) -> Bool {
        guard index < bytes.count, bytes[index] == UInt8(ascii: character) else { return false }
        index += 1
        return true
    }

    mutating func number(digits: Int) -> Int? {
        guard index + digits <= bytes.count else { return nil }
        var value = 0
        for byte in bytes[index..<index + digits] {
            guard let digit = Self.digit(byte) else { return nil }
            value = value * 10 + digit
        }
        index += digits
        return value
    }

    /// `.123456` → 123; no fraction → 0; a dot without digits → nil.
    mutating func fractionMilliseconds() -> Int? {
        guard skip(".") else { return 0 }
        var milliseconds = 0
        var count = 0
        while index < bytes.count, let digit = Self.digit(bytes[index]) {
            if count < 3 { milliseconds = milliseconds * 10 + digit }
            count += 1
            index += 1
        }
        guard count > 0 else { return nil }
        while count < 3 {
            milliseconds *= 10
            count += 1
        }
        return milliseconds
    }

    /// `Z` → 0, `+02:00` → 120, `-05:30` → -330.
    mutating func offsetMinutes() -> Int? {
        if skip("Z") || skip("z") { return 0 }
        let sign: Int
        if skip("+") { sign = 1 } else if skip("-") { sign = -1 } else { return nil }
        guard let hours = number(digits: 2), hours < 24, skip(":"),
              let minutes = number(digits: 2), minutes < 60 else { return nil }
        return sign * (hours * 60 + minutes)
    }

    private static func digit(_ byte: UInt8) -> Int? {
        (0x30...0x39).contains(byte) ? Int(byte - 0x30) : nil
    }
}
