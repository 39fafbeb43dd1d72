import CustomerDomain
import Foundation

extension CustomerStorage {
    /// Handles commands in order inside one transaction (see `CreateCustomerCore`) and returns one
    /// outcome per command. Throws only when the database fails; then nothing was committed. A
    /// deadlock or serialization failure throws too (classified `.conflict`): running the batch
    /// again is the caller's decision (the worker's `DeliveryFate`, one policy for every failure).
    /// `now` is truncated to whole milliseconds, the precision of replies and rows. The
    /// transaction also removes the handling-attempt markers `finishingAttempts`.
    public func process(_ commands: [IncomingCommand], now: Date, finishingAttempts: [String] = []) async throws -> [CommandOutcome] {
        guard !commands.isEmpty else { return [] }
        return try await createCustomers(CreateCustomerCore(commands: commands, now: Timestamp(now)), finishingAttempts: finishingAttempts)
    }

    /// `process`, for callers that expect a reply for every command: a command that fails on its
    /// own (`CommandOutcome.failed`) throws `CommandFailed`.
    public func handle(_ commands: [IncomingCommand], now: Date) async throws -> [ReplyRecord] {
        try await process(commands, now: now).map { outcome in
            switch outcome {
            case .reply(let reply): return reply
            case .failed(let reason): throw CommandFailed(reason: reason)
            }
        }
    }
}

/// A command that fails on its own (see `CommandOutcome.failed`).
public struct CommandFailed: CommandFault, Sendable, CustomStringConvertible {
    public var reason: String
    public var description: String { reason }
}
