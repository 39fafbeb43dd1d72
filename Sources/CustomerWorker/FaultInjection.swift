import AMQP
import Foundation
import Logging

/// Failures the worker causes on purpose, for tests of what happens after a crash. Every fault
/// is off unless an environment variable names it explicitly; nothing else can turn one on.
public struct FaultInjection: Sendable {
    /// The worker crashes (as a trap would) right before handling a command with this externalId.
    public static let crashOnExternalIDVariable = "CUSTOMER_WORKER_FAULT_CRASH_ON_EXTERNAL_ID"

    public var crashOnExternalID: String?

    public init(crashOnExternalID: String? = nil) {
        self.crashOnExternalID = crashOnExternalID
    }

    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) -> FaultInjection {
        FaultInjection(crashOnExternalID: environment[crashOnExternalIDVariable].flatMap { $0.isEmpty ? nil : $0 })
    }

    public var isArmed: Bool { crashOnExternalID != nil }

    /// Crashes the process if one of `deliveries` is the targeted command.
    func crashIfTargeted(_ deliveries: some Sequence<Delivery>, logger: Logger) {
        guard let target = crashOnExternalID else { return }
        for delivery in deliveries {
            let object = try? JSONSerialization.jsonObject(with: Data(delivery.body)) as? [String: Any]
            guard object?["externalId"] as? String == target else { continue }
            logger.critical("fault injection: crashing on purpose", metadata: ["command.message_id": "\(delivery.properties.messageID ?? "")"])
            fatalError("fault injection (\(Self.crashOnExternalIDVariable))")
        }
    }
}
