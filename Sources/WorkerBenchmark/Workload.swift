/// The families of external ids the benchmark uses, so no two families ever collide.
enum IDSpace: String, Sendable {
    /// Commands of the measured run.
    case command = "c"
    /// Customers written straight into the database before the run.
    case preload = "p"
    /// Commands sent before measuring, to see the consumers answer.
    case warmUp = "w"
    /// The command whose reply sets the size of the ceiling's replies.
    case sample = "s"
}

/// The create-customer command bodies the benchmark sends. Every body has the same size (fixed-width
/// numbers), so every reply has the same size too: one sample reply sizes the ceiling's replies.
struct CommandShape: Sendable {
    /// Optional free-text fields that only pad a command up to `--message-size`.
    private static let paddingFields = ["billingAddress2", "shippingAddress1", "shippingAddress2", "shippingCity", "quickBooksId", "stripeId"]
    private static let longestField = 255
    private static let digits = 10
    /// Bytes a padding field costs beyond its value: `,"key":""`.
    private static func overhead(_ key: String) -> Int { key.utf8.count + 6 }

    private static let unpadded = CommandShape(namePadding: 0, extraFields: [])
    static let naturalSize = unpadded.body(.command, 0).count
    /// The name field can grow to the contract's limit before padding fields are added.
    private static let nameRoom = longestField - "Customer ".count - digits
    static let sizes = naturalSize...(naturalSize + nameRoom + paddingFields.map { overhead($0) + longestField }.reduce(0, +))

    private let namePadding: Int
    private let extraFields: [(key: String, length: Int)]

    private init(namePadding: Int, extraFields: [(key: String, length: Int)]) {
        self.namePadding = namePadding
        self.extraFields = extraFields
    }

    /// Bodies of exactly `size` bytes (one of `sizes`), or the natural size when nil.
    init(size: Int?) {
        var remaining = (size ?? Self.naturalSize) - Self.naturalSize
        var extras: [(key: String, length: Int)] = []
        for key in Self.paddingFields where remaining > Self.nameRoom {
            let length = min(Self.longestField, remaining - Self.overhead(key))
            extras.append((key, length))
            remaining -= Self.overhead(key) + length
        }
        precondition((0...Self.nameRoom).contains(remaining), "message size outside CommandShape.sizes")
        self.init(namePadding: remaining, extraFields: extras)
    }

    /// A valid command: a US customer with a billing address, which the free default plan subscribes.
    func body(_ space: IDSpace, _ number: Int) -> [UInt8] {
        let digits = String(number).leftPadded(to: Self.digits)
        var json = #"{"externalId":"\#(space.rawValue)-\#(digits)","name":"Customer \#(digits)\#(String(repeating: "x", count: namePadding))""#
        json += #","email":"customer-\#(digits)@example.com","billingAddress1":"1 Main Street","billingCity":"Springfield""#
        json += #","billingCountry":"US","billingState":"IL","billingZipCode":"62701""#
        for field in extraFields {
            json += #","\#(field.key)":"\#(String(repeating: "x", count: field.length))""#
        }
        return Array((json + "}").utf8)
    }
}

/// The commands of one run in publish order: unique commands, and a share of exact repeats of
/// earlier ones spread evenly over the run, each repeating a random earlier command.
struct Workload: Sendable {
    let shape: CommandShape
    /// For each message, the number of the unique command it carries.
    private let numbers: [Int32]
    let duplicates: Int

    init(messages: Int, duplicatesPercent: Double, shape: CommandShape, seed: UInt64 = 0x5EED) {
        self.shape = shape
        let duplicates = Int((Double(messages) * duplicatesPercent / 100).rounded())
        var random = SplitMix64(seed: seed)
        var numbers: [Int32] = []
        numbers.reserveCapacity(messages)
        var unique: Int32 = 0
        for index in 0..<messages {
            // Bresenham's spread: `duplicates` of the `messages` slots, never the first.
            if (index + 1) * duplicates / messages != index * duplicates / messages, unique > 0 {
                numbers.append(Int32.random(in: 0..<unique, using: &random))
            } else {
                numbers.append(unique)
                unique += 1
            }
        }
        self.numbers = numbers
        self.duplicates = messages - Int(unique)
    }

    var count: Int { numbers.count }
    var uniqueCommands: Int { count - duplicates }

    func body(at index: Int) -> [UInt8] { shape.body(.command, Int(numbers[index])) }
}

/// A small, fast, seedable generator, so the same settings produce the same workload.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64

    init(seed: UInt64) { state = seed }

    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension String {
    /// The string after enough zeros to make it `width` characters long.
    func leftPadded(to width: Int) -> String {
        String(repeating: "0", count: max(0, width - count)) + self
    }
}
