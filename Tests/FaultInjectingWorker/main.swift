import BrokerTestSupport
import CustomerWorker
import Foundation
import Logging

// `customer-worker run` with fault injection, for the poison tests only: the production binary
// links no fault. Settings from the environment, as `customer-worker run` reads them.
let configuration = try WorkerConfiguration.fromEnvironment()
LoggingSystem.bootstrap { label in
    var handler = StreamLogHandler.standardError(label: label)
    handler.logLevel = configuration.logLevel
    return handler
}
let logger = Logger(label: "customer-worker")
let faults = FaultInjection.fromEnvironment()
if faults.isArmed { logger.warning("fault injection is armed: this worker will crash on purpose", metadata: ["fault": "\(FaultInjection.crashOnExternalIDVariable)"]) }
let application = try WorkerApplication(configuration: configuration, logger: logger) { FaultInjectingStore($0, faults: faults) }
try await application.run()
