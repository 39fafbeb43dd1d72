import BrokerTestSupport
import CustomerWorker
import Foundation
import Logging
import WorkerComposition

// `customer-worker run` with fault injection, for the tests of crashes only: the production binary
// links no fault. Settings from the environment, as `customer-worker` reads them. Two commands:
//   (none)                                      the worker, crashing on the command FaultInjection names;
//   dead-letters replay --all --batch-size N    a replay of every dead letter, stalling where it names.
let configuration = try WorkerConfiguration.fromEnvironment()
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = configuration.logLevel
    return handler
}
let logger = Logger(label: "customer-worker")
let faults = FaultInjection.fromEnvironment()
if faults.isArmed { logger.warning("fault injection is armed: this process will fail on purpose", metadata: ["faults": "\(faults)"]) }
let arguments = Array(CommandLine.arguments.dropFirst())
if arguments.starts(with: ["dead-letters", "replay", "--all"]) {
    let batchSize = arguments.firstIndex(of: "--batch-size").flatMap { arguments.indices.contains($0 + 1) ? Int(arguments[$0 + 1]) : nil } ?? 100
    let queue = try await DeadLetterQueue(configuration: configuration, logger: logger)
    let report = try await queue.replay(ids: nil, dryRun: false, batchSize: batchSize, confirmed: { try await faults.stallReplayIfDue(batches: $0) })
    await queue.close()
    print("\(report.replayed.count) replayed")
} else {
    let application = try WorkerApplication(configuration: configuration, logger: logger) { FaultInjectingStore($0, faults: faults) }
    try await application.run()
}
