/// The lifecycle of one session's broker connection, as pure transitions: each event goes in,
/// the actions the event loop must take come out. Nothing here does I/O, so unit tests drive it
/// without a broker (after postgres-nio's `ConnectionStateMachine`).
///
/// ```
///  idle ──request──▶ connecting ──ok──▶ open(g) ◀──unblocked── blocked(g)
///   ▲                    │ failed          │  └──blocked──────────▲
///   └────────────────────┘                 │ lost (socket, heartbeat, channel or connection close, cancel)
///   ▲                                      ▼
///   └──rounds exhausted── recovering(round) ──ok──▶ open(g+1)
///  any ──close──▶ closed
/// ```
public struct ConnectionStateMachine: Sendable, Equatable {
    public enum State: Sendable, Equatable {
        /// Not connected and not trying: the next request connects once and gets the error if that fails.
        case idle
        /// A connect round (every node once) is under way for a request.
        case connecting
        /// Connected; `generation` counts successful connects and is part of every delivery tag.
        case open(generation: UInt64)
        /// Connected, but the broker blocks publishing (resource alarm): publishes wait.
        case blocked(generation: UInt64, reason: String)
        /// The connection was lost; round `round` of reconnecting (with backoff before each round) is next.
        case recovering(round: Int, lastError: AMQPError)
        /// Closed by its owner: every request fails.
        case closed

        /// Open, blocked or not.
        public var isConnected: Bool {
            switch self {
            case .open, .blocked: true
            default: false
            }
        }
    }

    public enum Action: Sendable, Equatable {
        /// Nothing to do.
        case none
        /// Run the request now on the open connection.
        case run
        /// Try every node once now, for the request that asked.
        case connect
        /// Keep the request until the connection is open again.
        case park
        /// Fail the request that asked with this error.
        case fail(AMQPError)
        /// The new connection is open: replay the remembered set-up, then run parked requests and
        /// publish what waits (`recovered` tells whether this was a reconnect).
        case resume(generation: UInt64, recovered: Bool)
        /// Drop the connection, void its deliveries and unsettled publishes, and wait `round`'s
        /// backoff before reconnecting.
        case scheduleReconnect(round: Int, error: AMQPError)
        /// Reconnecting gave up: fail everything that waits for the connection with this error.
        case failWaiting(AMQPError)
        /// Publishing may go on: write the publishes that waited while blocked.
        case flushPublishes
        /// Close the connection politely and fail everything that waits with `sessionClosed`.
        case closeConnection
    }

    public private(set) var state: State = .idle
    /// Successful connects so far (0 before the first).
    public private(set) var generation: UInt64 = 0
    /// Connects after a loss (not counting the first).
    public private(set) var reconnects = 0
    /// Rounds of reconnecting before giving up; nil → until closed.
    public let maximumRounds: Int?

    public init(maximumRounds: Int? = nil) {
        self.maximumRounds = maximumRounds
    }

    public var isBlocked: Bool { if case .blocked = state { true } else { false } }
    public var isOpen: Bool { state.isConnected }

    /// A caller needs the connection (set-up, publish, consume, ack).
    public mutating func requestArrived() -> Action {
        switch state {
        case .idle:
            state = .connecting
            return .connect
        case .connecting, .recovering:
            return .park
        case .open, .blocked:
            return .run
        case .closed:
            return .fail(.sessionClosed)
        }
    }

    /// A connect round succeeded and the connection is open.
    public mutating func connected() -> Action {
        switch state {
        case .connecting:
            generation += 1
            state = .open(generation: generation)
            return .resume(generation: generation, recovered: false)
        case .recovering:
            generation += 1
            reconnects += 1
            state = .open(generation: generation)
            return .resume(generation: generation, recovered: true)
        case .idle, .open, .blocked, .closed:
            return .none
        }
    }

    /// A connect round failed on every node.
    public mutating func connectFailed(_ error: AMQPError) -> Action {
        switch state {
        case .connecting:
            state = .idle
            return .fail(error)
        case .recovering(let round, _):
            if !error.isRecoverable || maximumRounds.map({ round >= $0 }) == true {
                state = .idle
                return .failWaiting(error)
            }
            state = .recovering(round: round + 1, lastError: error)
            return .scheduleReconnect(round: round + 1, error: error)
        case .idle, .open, .blocked, .closed:
            return .none
        }
    }

    /// The open connection broke: socket error, missed heartbeats, the broker closed the
    /// connection or our channel, or cancelled our consumer.
    public mutating func connectionLost(_ error: AMQPError) -> Action {
        switch state {
        case .open, .blocked:
            state = .recovering(round: 1, lastError: error)
            return .scheduleReconnect(round: 1, error: error)
        case .idle, .connecting, .recovering, .closed:
            return .none
        }
    }

    /// `connection.blocked`.
    public mutating func blockedByBroker(reason: String) -> Action {
        guard case .open(let generation) = state else { return .none }
        state = .blocked(generation: generation, reason: reason)
        return .none
    }

    /// `connection.unblocked`.
    public mutating func unblockedByBroker() -> Action {
        guard case .blocked(let generation, _) = state else { return .none }
        state = .open(generation: generation)
        return .flushPublishes
    }

    /// The owner closes the session.
    public mutating func closeRequested() -> Action {
        if state == .closed { return .none }
        state = .closed
        return .closeConnection
    }
}

/// The order in which a session tries its broker nodes: shuffled once, then round robin,
/// starting after the node it last used, so a lost node is tried last.
public struct NodeRotation: Sendable, Equatable {
    public let count: Int
    /// Index of the node in use (or last tried).
    public private(set) var current: Int

    public init(count: Int, start: Int = 0) {
        precondition(count > 0, "at least one node")
        self.count = count
        self.current = start % count
    }

    /// One round: every node once, beginning with the one after `current` when `moveOn`
    /// (after a loss), else with `current` itself.
    public func round(movingOn moveOn: Bool) -> [Int] {
        let first = moveOn ? current + 1 : current
        return (0..<count).map { (first + $0) % count }
    }

    public mutating func use(_ index: Int) { current = index }
}
