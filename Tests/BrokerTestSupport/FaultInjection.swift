import CreateCustomer
import CustomerDomain
import Foundation

/// Failures a worker causes on purpose, for tests of what happens after a crash. Only the
/// test-only `customer-worker-faults` executable links it (the production binary has no such
/// code); every fault is off unless an environment variable names it explicitly.
public struct FaultInjection: Sendable {
    /// The worker crashes (as a trap would) right before handling a command with this externalId.
    public static let crashOnExternalIDVariable = "CUSTOMER_WORKER_FAULT_CRASH_ON_EXTERNAL_ID"

    /// A dead-letter replay stops after this many confirmed copy batches, before acknowledging the
    /// last one, and waits to be killed (the worst moment for a crash).
    public static let stallReplayAfterBatchesVariable = "CUSTOMER_WORKER_FAULT_REPLAY_STALL_AFTER_BATCHES"

    /// What a worker writes to standard error right before crashing on purpose.
    public static let crashMessage = "fault injection: crashing on purpose"

    public var crashOnExternalID: String?
    public var stallReplayAfterBatches: Int?

    public init(crashOnExternalID: String? = nil, stallReplayAfterBatches: Int? = nil) {
        self.crashOnExternalID = crashOnExternalID
        self.stallReplayAfterBatches = stallReplayAfterBatches
    }

    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> FaultInjection {
        FaultInjection(crashOnExternalID: environment[crashOnExternalIDVariable].flatMap { $0.isEmpty ? nil : $0 },
                       stallReplayAfterBatches: environment[stallReplayAfterBatchesVariable].flatMap { Int($0) })
    }

    public var isArmed: Bool { crashOnExternalID != nil || stallReplayAfterBatches != nil }

    /// After `batches` confirmed replay batches: never returns once the stall is due (the process
    /// waits to be killed), after writing a line a test waits for.
    public func stallReplayIfDue(batches: Int) async throws {
        guard let after = stallReplayAfterBatches, batches >= after else { return }
        FileHandle.standardError.write(Data("fault injection: replay stalled after confirming, before acknowledging (\(batches) batches)\n".utf8))
        while true { try await Task.sleep(for: .seconds(3600)) }
    }

    /// Crashes the process if one of `commands` is the targeted command.
    /// `context` is written beside the message (what a test shows when a crash count surprises it).
    public func crashIfTargeted(_ commands: [IncomingCommand], context: String = "") {
        guard let target = crashOnExternalID else { return }
        for command in commands {
            let object = try? JSONSerialization.jsonObject(with: Data(command.body)) as? [String: Any]
            guard object?["externalId"] as? String == target else { continue }
            FileHandle.standardError.write(Data((Self.crashMessage + " (\(context))\n").utf8))
            fatalError("fault injection (\(Self.crashOnExternalIDVariable))")
        }
    }
}

/// A store that crashes the process (`FaultInjection`) right before a transaction handles the
/// targeted command, after its marker, if any, committed: where a command that takes a worker
/// down would. Everything else goes to the store it wraps.
public struct FaultInjectingStore: CustomerStorage {
    public let base: any CustomerStorage
    public let faults: FaultInjection

    public init(_ base: any CustomerStorage, faults: FaultInjection) {
        self.base = base
        self.faults = faults
    }

    public func createCustomers(_ core: CreateCustomerCore, finishingAttempts: [String]) async throws -> [CommandOutcome] {
        faults.crashIfTargeted(core.commands, context: "\(core.commands.count) command(s), \(finishingAttempts.count) marker(s) finishing")
        return try await base.createCustomers(core, finishingAttempts: finishingAttempts)
    }

    public func administer<Operation: AdminOperation>(_ operation: Operation) async throws -> Operation.Answer {
        try await base.administer(operation)
    }

    public func beginAttempt(key: String, now: Timestamp, since: Timestamp) async throws -> Int {
        let earlier = try await base.beginAttempt(key: key, now: now, since: since)
        if faults.crashOnExternalID != nil {
            FileHandle.standardError.write(Data("fault injection: marker \(key.prefix(12)) counted \(earlier) earlier attempt(s)\n".utf8))
        }
        return earlier
    }

    public func clearAttempt(key: String) async throws { try await base.clearAttempt(key: key) }
    public func classify(_ error: any Error) -> StoreFailure { base.classify(error) }
    public func migrate() async throws { try await base.migrate() }
    public func checkWritable() async throws { try await base.checkWritable() }
    public func customerCount() async throws -> Int { try await base.customerCount() }
    public var location: String { base.location }
}
