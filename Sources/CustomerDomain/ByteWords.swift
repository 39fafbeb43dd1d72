/// Questions about a run of bytes answered eight bytes at a time: every field of every command is
/// checked for control characters and for bytes JSON must escape, and byte by byte those passes
/// cost ~5,000 instructions a command. The common field has neither, and a word-wide test says
/// so; only a field that has one goes through the exact byte-by-byte rule.
enum ByteWords {
    private static let ones: UInt64 = 0x0101_0101_0101_0101
    private static let highBits: UInt64 = 0x8080_8080_8080_8080

    /// True exactly when some byte of `bytes` is below 0x20 or is `a` or `b` (the word tests below
    /// are exact as "any byte" tests).
    static func containsControlOr(_ a: UInt8, _ b: UInt8, in bytes: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let base = bytes.baseAddress else { return false }
        let raw = UnsafeRawPointer(base)
        var offset = 0
        while offset + 8 <= bytes.count {
            let word = raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
            if hasByteBelow0x20(word) || hasByte(word, a) || hasByte(word, b) { return true }
            offset += 8
        }
        while offset < bytes.count {
            let byte = bytes[offset]
            if byte < 0x20 || byte == a || byte == b { return true }
            offset += 1
        }
        return false
    }

    /// Some byte of `word` is below 0x20 (the "has less than n" test, exact for n ≤ 128).
    private static func hasByteBelow0x20(_ word: UInt64) -> Bool {
        (word &- ones &* 0x20) & ~word & highBits != 0
    }

    /// Some byte of `word` equals `byte` (a zero byte of the exclusive or).
    private static func hasByte(_ word: UInt64, _ byte: UInt8) -> Bool {
        let difference = word ^ (ones &* UInt64(byte))
        return (difference &- ones) & ~difference & highBits != 0
    }
}
