/// Publisher-confirm bookkeeping for one channel in confirm mode, as a pure value.
///
/// Every published message gets the channel's next sequence number (from 1). The broker answers
/// with `basic.ack`/`basic.nack` for a sequence number, or for all up to it (`multiple`); a
/// mandatory message it cannot route comes back first as `basic.return` (which carries no
/// sequence number: it is matched to the oldest unsettled message with the same exchange,
/// routing key and message id) and is then acked. The tracker turns those frames into one
/// `Settlement` per message, naming the request and the message's index in it.
public struct ConfirmTracker: Sendable, Equatable {
    /// What the tracker knows of one unsettled message.
    public struct Pending: Sendable, Equatable {
        public var request: UInt64
        public var index: Int
        public var exchange: String
        public var routingKey: String
        public var messageID: String?
        var returned: PublishOutcome?

        public init(request: UInt64, index: Int, exchange: String, routingKey: String, messageID: String?) {
            self.request = request
            self.index = index
            self.exchange = exchange
            self.routingKey = routingKey
            self.messageID = messageID
        }
    }

    /// The broker's verdict on one message of one request.
    public struct Settlement: Sendable, Equatable {
        public var request: UInt64
        public var index: Int
        public var outcome: PublishOutcome

        public init(request: UInt64, index: Int, outcome: PublishOutcome) {
            self.request = request
            self.index = index
            self.outcome = outcome
        }
    }

    /// Sequence number of `entries[head]` (or of the next message when nothing is in flight).
    private var base: UInt64 = 1
    /// One slot per sequence number from `base`; nil once settled or forgotten.
    private var entries: [Pending?] = []
    private var head = 0

    public init() {}

    /// The sequence number the next published message gets.
    public var nextSequence: UInt64 { base + UInt64(entries.count - head) }

    /// Messages published and not settled yet.
    public var unsettledCount: Int { entries[head...].lazy.filter { $0 != nil }.count }

    /// Records a message just published; returns its sequence number.
    @discardableResult
    public mutating func published(_ pending: Pending) -> UInt64 {
        let sequence = nextSequence
        entries.append(pending)
        return sequence
    }

    public mutating func acked(_ sequence: UInt64, multiple: Bool) -> [Settlement] {
        settle(sequence, multiple: multiple) { $0.returned ?? .confirmed }
    }

    public mutating func nacked(_ sequence: UInt64, multiple: Bool) -> [Settlement] {
        settle(sequence, multiple: multiple) { _ in .nacked }
    }

    /// A `basic.return`: marks the oldest unsettled, not yet returned message it describes.
    /// Returns false when no unsettled message matches (e.g. its request timed out).
    @discardableResult
    public mutating func returned(exchange: String, routingKey: String, messageID: String?, replyCode: UInt16,
                                  replyText: String) -> Bool {
        for slot in head..<entries.count {
            guard let pending = entries[slot], pending.returned == nil, pending.exchange == exchange,
                  pending.routingKey == routingKey, pending.messageID == messageID else { continue }
            entries[slot]!.returned = .returned(replyCode: replyCode, replyText: replyText)
            return true
        }
        return false
    }

    /// Drops a request's messages (it timed out): their confirms, if any come, are ignored.
    public mutating func forget(request: UInt64) {
        for slot in head..<entries.count where entries[slot]?.request == request {
            entries[slot] = nil
        }
        trim()
    }

    /// The channel is gone: sequence numbers restart at 1 on the next one. Returns what was
    /// unsettled, in publishing order, so it can be published again.
    public mutating func reset() -> [Pending] {
        let unsettled = entries[head...].compactMap { $0 }
        self = ConfirmTracker()
        return unsettled
    }

    private mutating func settle(_ sequence: UInt64, multiple: Bool, _ outcome: (Pending) -> PublishOutcome) -> [Settlement] {
        guard sequence >= base, head < entries.count else { return [] }
        let last = Int(min(sequence - base, UInt64(Int.max))) + head
        guard last < entries.count || multiple else { return [] }
        let first = multiple ? head : last
        var settled: [Settlement] = []
        for slot in first...min(last, entries.count - 1) {
            guard let pending = entries[slot] else { continue }
            settled.append(Settlement(request: pending.request, index: pending.index, outcome: outcome(pending)))
            entries[slot] = nil
        }
        trim()
        return settled
    }

    /// Drops settled slots at the front, keeping memory bounded by what is in flight.
    private mutating func trim() {
        while head < entries.count, entries[head] == nil {
            head += 1
            base += 1
        }
        if head == entries.count {
            entries.removeAll(keepingCapacity: true)
            head = 0
        } else if head > 4096, head * 2 > entries.count {
            entries.removeFirst(head)
            head = 0
        }
    }
}
