/// Code lists the contract validates against, as two-letter upper-case ASCII codes.
public enum Geography {
    /// Every officially assigned ISO 3166-1 alpha-2 code (249).
    public static let countryCodes = TwoLetterCodeSet("""
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ
        BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ
        CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ
        DE DJ DK DM DO DZ
        EC EE EG EH ER ES ET
        FI FJ FK FM FO FR
        GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY
        HK HM HN HR HT HU
        ID IE IL IM IN IO IQ IR IS IT
        JE JM JO JP
        KE KG KH KI KM KN KP KR KW KY KZ
        LA LB LC LI LK LR LS LT LU LV LY
        MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ
        NA NC NE NF NG NI NL NO NP NR NU NZ
        OM
        PA PE PF PG PH PK PL PM PN PR PS PT PW PY
        QA
        RE RO RS RU RW
        SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ
        TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ
        UA UG UM US UY UZ
        VA VC VE VG VI VN VU
        WF WS
        YE YT
        ZA ZM ZW
        """)

    /// USPS codes: the 50 states, DC, the inhabited territories and the minor outlying islands,
    /// the armed forces codes and the freely associated states (63).
    public static let usStateCodes = TwoLetterCodeSet("""
        AL AK AZ AR CA CO CT DE FL GA HI ID IL IN IA KS KY LA ME MD MA MI MN MS MO
        MT NE NV NH NJ NM NY NC ND OH OK OR PA RI SC SD TN TX UT VT VA WA WV WI WY
        DC
        AS GU MP PR VI UM
        AA AE AP
        FM MH PW
        """)
}

/// A set of two-letter codes as a 26×26 bitmap: a lookup is two subtractions and an index, with no
/// hashing and no allocation, because it runs for every country and state field of every message.
public struct TwoLetterCodeSet: Sendable {
    private var members = [Bool](repeating: false, count: 26 * 26)
    public private(set) var count = 0

    init(_ list: String) {
        for code in list.split(whereSeparator: \.isWhitespace) {
            guard let index = Self.index(of: code.utf8), !members[index] else {
                preconditionFailure("bad or repeated code \(code) in a built-in list")
            }
            members[index] = true
            count += 1
        }
    }

    /// Whether `code` is exactly two upper-case ASCII letters listed in the set.
    public func contains(_ code: String) -> Bool {
        guard let index = Self.index(of: code.utf8) else { return false }
        return members[index]
    }

    /// Whether `utf8` is two ASCII letters, in either case, whose upper case is in the set
    /// (`"ß"` is two bytes but no letters: only ASCII folds).
    func contains(ignoringASCIICase utf8: UnsafeBufferPointer<UInt8>) -> Bool {
        guard utf8.count == 2,
              let index = Self.index(FieldRules.asciiUppercased(utf8[0]), FieldRules.asciiUppercased(utf8[1]))
        else { return false }
        return members[index]
    }

    private static func index(of utf8: some Collection<UInt8>) -> Int? {
        guard utf8.count == 2 else { return nil }
        return index(utf8[utf8.startIndex], utf8[utf8.index(after: utf8.startIndex)])
    }

    private static func index(_ first: UInt8, _ second: UInt8) -> Int? {
        let letters = UInt8(ascii: "A")...UInt8(ascii: "Z")
        guard letters.contains(first), letters.contains(second) else { return nil }
        return Int(first - UInt8(ascii: "A")) * 26 + Int(second - UInt8(ascii: "A"))
    }
}
