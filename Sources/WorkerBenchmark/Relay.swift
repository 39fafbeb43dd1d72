import AMQP
import CBenchRelay
import CreateCustomer
import CustomerWorker
import Foundation

/// The broker's ceiling for the worker's traffic: the worker's broker work without its domain work.
///
/// A relay written directly on rabbitmq-c (`CBenchRelay`) on a thread of its own consumes the
/// command queue with the worker's prefetch, publishes the worker's own reply for each command
/// (same bytes, properties and events exchange, persistent, confirmed) and acknowledges with
/// `multiple` once the replies are confirmed. It costs a few microseconds of CPU per message, so
/// what limits it is the broker, which is what the ceiling is meant to measure.
///
/// `@unchecked Sendable`: the C handle is touched by the relay's own thread inside `run()` only;
/// other threads call `cw_relay_stop` (an atomic store) and read the figures after `run()`
/// returned, which happens after that thread ended (it resumes `run()` as its last act).
final class Relay: @unchecked Sendable {
    private let handle: OpaquePointer

    /// A relay for `topology`'s command queue; it connects and consumes when `run()` starts.
    init(topology: BenchTopology, reply: ReplyRecord) throws {
        let configuration = topology.configuration
        let amqp = try configuration.amqpConfiguration
        guard amqp.tls == nil else { throw BenchmarkError.setupFailed("the ceiling's relay speaks plain AMQP only: use an amqp:// URL") }
        // The reply as the worker carries it to the events exchange.
        let event = ReplyEnvelope(command: MessageProperties(), reply: reply, configuration: configuration, timestamp: 0).events
        guard let handle = reply.body.withUnsafeBytes({ body in
            cw_relay_new(amqp.host, Int32(amqp.port), amqp.user, amqp.password, amqp.vhost,
                         configuration.names.commandQueue, UInt16(configuration.prefetch), event.exchange, event.routingKey,
                         body.baseAddress, body.count, reply.type.rawValue, event.properties.contentType ?? "application/json",
                         configuration.appID, reply.idempotencyKey)
        }) else { throw BenchmarkError.setupFailed("cannot create the ceiling's relay (out of memory)") }
        self.handle = handle
    }

    deinit { cw_relay_free(handle) }

    /// Relays until the task is cancelled; throws when the relay stopped on an error.
    func run() async throws {
        let status: Int32 = await withTaskCancellationHandler {
            await withCheckedContinuation { (finished: CheckedContinuation<Int32, Never>) in
                let thread = Thread { finished.resume(returning: cw_relay_run(self.handle)) }
                thread.name = "bench relay"
                thread.start()
            }
        } onCancel: {
            cw_relay_stop(self.handle)
        }
        if status != 0 { throw BenchmarkError.relayFailed(String(cString: cw_relay_error(handle))) }
    }

    /// After `run()`: commands relayed and the relay thread's CPU time.
    var usage: (relayed: Int, cpuSeconds: Double) {
        (Int(cw_relay_relayed(handle)), Double(cw_relay_cpu_nanoseconds(handle)) / 1e9)
    }
}
