import AMQP
import CreateCustomer
import Dispatch
import Foundation
import Logging
import Observability
import Synchronization
import Tracing

/// A batch's replies, from the machine's stored replies to the broker's confirms: the messages
/// built once per batch (the events copy, and the `reply_to` copy where allowed), each attempt
/// published with confirms, its outcome handed to the machine, and the watchdog that ends the
/// worker when publishing keeps failing. It decides nothing about the batch: `BatchMachine` says
/// which replies to publish, on which attempt, and what a failure means.
final class ReplyPublisher: Sendable {
    private let publisher: AMQPSession
    private let configuration: WorkerConfiguration
    private let metrics: WorkerMetrics
    private let traces: CommandTraces?
    private let logger: Logger
    /// Monotonic time of the first publish failure since the last success; 0 while publishing works.
    private let publishFailingSince = Atomic<UInt64>(0)
    /// Each onset of publish failures (the value `publishFailingSince` took), for the watchdog;
    /// only the newest matters.
    private let publishFailures = AsyncStream.makeStream(of: UInt64.self, bufferingPolicy: .bufferingNewest(1))
    private let refusalLog = Mutex(LogInterval(every: .seconds(60)))

    init(publisher: AMQPSession, configuration: WorkerConfiguration, metrics: WorkerMetrics, traces: CommandTraces?, logger: Logger) {
        self.publisher = publisher
        self.configuration = configuration
        self.metrics = metrics
        self.traces = traces
        self.logger = logger
    }

    /// A batch's replies as messages, built once for all attempts: index `i` of the machine's
    /// items has `events[i]` (nil without a reply) and maybe `copies[i]` (its allowed `reply_to`).
    struct Replies {
        var events: [OutgoingMessage?]
        var copies: [OutgoingMessage?]
        var span: (any Span)?
    }

    /// Builds the replies' messages; counts and logs (once a minute) the refused `reply_to` names.
    /// One pass over the items by index: iterating them by value, and filtering them once per
    /// question, copied each item (its delivery and reply) five times.
    func prepare(_ machine: BatchMachine) -> Replies {
        let timestamp = UInt64(Date().timeIntervalSince1970)
        let count = machine.items.count
        var replies = Replies(events: Array(repeating: nil, count: count), copies: Array(repeating: nil, count: count), span: nil)
        var published: [ReplyRecord] = []
        published.reserveCapacity(count)
        var tags: [DeliveryTag] = []
        tags.reserveCapacity(count)
        // Read once: the property read in the loop copied the whole configuration per reply.
        let configuration = configuration
        for index in machine.items.indices {
            guard !machine.items[index].isSettled, let reply = machine.items[index].reply else { continue }
            let tag = machine.items[index].delivery.tag
            published.append(reply)
            tags.append(tag)
            let envelope = machine.items[index].delivery.withProperties { command in
                ReplyEnvelope(command: command, reply: reply, configuration: configuration,
                              timestamp: timestamp, traceHeaders: traces?.replyHeaders(tag) ?? [:])
            }
            replies.events[index] = envelope.events
            replies.copies[index] = envelope.replyToCopy
            if let name = envelope.refusedReplyTo {
                metrics.replyToUndelivered(.refused)
                // A sender can repeat this at the broker's rate: one line a minute, with a count.
                if let earlier = refusalLog.withLock({ $0.shouldLog() }) {
                    logger.notice("reply_to not allowed; the reply goes to the events exchange only", metadata: [
                        "command.message_id": "\(machine.items[index].delivery.properties.messageID ?? "")",
                        "reply_to": "\(name.prefix(255))",
                        "reply_to.refused_since_last_line": "\(earlier)",
                    ])
                }
            }
            if envelope.droppedCorrelationID {
                logger.notice("correlation_id too long to carry (over 255 bytes as UTF-8); the reply carries the message_id", metadata: [
                    "command.message_id": "\(machine.items[index].delivery.properties.messageID ?? "")",
                ])
            }
        }
        metrics.record(published)
        replies.span = traces?.publishSpan(tags)
        return replies
    }

    /// One attempt at publishing: the events copies of `events` (their confirms gate the ack)
    /// and the `reply_to` copies of `copies` (best effort: counted and logged when not delivered).
    func publish(events: [Int], copies: [Int], attempt: Int, replies: inout Replies,
                         _ machine: inout BatchMachine) async -> BatchMachine.PublishAction {
        replies.span?.attributes["customer_worker.publish.attempts"] = attempt
        let copyMessages = copies.compactMap { replies.copies[$0] }
        let sending = events.compactMap { replies.events[$0] } + copyMessages
        do {
            let start = ContinuousClock.now
            let outcomes: [PublishOutcome]
            do {
                outcomes = try await publisher.publish(sending, timeout: configuration.confirmTimeout)
                publishFailingSince.store(0, ordering: .relaxed)
            } catch {
                let onset = DispatchTime.now().uptimeNanoseconds
                if publishFailingSince.compareExchange(expected: 0, desired: onset, ordering: .relaxed).exchanged {
                    publishFailures.continuation.yield(onset)
                }
                throw error
            }
            metrics.confirm.recordSince(start)
            let eventOutcomes = Array(outcomes.prefix(events.count))
            for (index, outcome) in zip(events, eventOutcomes) {
                if case .returned(let code, let text) = outcome {
                    logger.warning("reply not routed: nothing is bound to the events exchange", metadata: [
                        "reply.routing_key": "\(replies.events[index]?.routingKey ?? "")", "amqp.reply_code": "\(code)", "amqp.reply_text": "\(text)",
                    ])
                }
            }
            noteCopies(copyMessages, outcomes: outcomes.dropFirst(events.count))
            let action = machine.published(eventOutcomes)
            let nacked = eventOutcomes.filter { $0 == .nacked }.count
            if nacked > 0 { noteTransientFailure(ReplyNotConfirmed(nacked: nacked), attempt: attempt, batchSize: events.count, action, replies) }
            return action
        } catch {
            if !copyMessages.isEmpty { metrics.replyToUndelivered(.error, count: copyMessages.count) }
            let action = machine.publishFailed(cancelled: Task.isCancelled)
            noteTransientFailure(error, attempt: attempt, batchSize: events.count, action, replies)
            return action
        }
    }

    private static let givenBack = SpanStatus(code: .error, message: "replies not confirmed; commands returned to the queue")

    /// Counts and logs a failed attempt; `action`: what the machine answered (another attempt, or the batch given back).
    private func noteTransientFailure(_ error: any Error, attempt: Int, batchSize: Int, _ action: BatchMachine.PublishAction, _ replies: Replies) {
        replies.span?.recordError(error)
        metrics.transientFailures.increment()
        let exhausted: Bool = if case .pause(.publish) = action { false } else { true }
        if exhausted { replies.span?.setStatus(Self.givenBack) }
        logger.log(level: exhausted ? .error : .warning, "transient failure", metadata: [
            "operation": "publishing replies", "attempt": "\(attempt)", "batch.size": "\(batchSize)", "error": "\(error)",
        ])
    }

    /// Counts and logs (debug) the reply_to copies the broker did not deliver.
    private func noteCopies(_ copies: [OutgoingMessage], outcomes: ArraySlice<PublishOutcome>) {
        for (copy, outcome) in zip(copies, outcomes) {
            let failure: WorkerMetrics.ReplyToFailure
            switch outcome {
            case .confirmed: continue
            case .nacked: failure = .nacked
            case .returned: failure = .returned  // the requester's queue is gone (it stopped waiting)
            case .unencodable: failure = .error
            }
            metrics.replyToUndelivered(failure)
            logger.debug("reply_to copy not delivered; the events copy stands", metadata: [
                "command.message_id": "\(copy.properties.correlationID ?? "")", "reply_to.outcome": "\(failure.rawValue)",
            ])
        }
    }

    struct ReplyNotConfirmed: Error, CustomStringConvertible {
        let nacked: Int
        var description: String { "the broker refused (nacked) \(nacked) replies to the events exchange" }
    }

    /// Ends the worker with an error (a non-zero exit) once publishing replies has failed without
    /// a success for `publishFailureTimeout`: an orchestrator restarts it instead of it holding
    /// commands it cannot answer. Not polled: it sleeps until the deadline of each onset of
    /// failures (`publishFailures`), then fails if that onset still stands (no success since);
    /// cancellation (the worker stopping) ends the wait and the stream.
    func watch() async throws {
        let limit = UInt64(configuration.publishFailureTimeout.components.seconds) * 1_000_000_000
        for await onset in publishFailures.stream {
            let deadline = DispatchTime(uptimeNanoseconds: onset + limit)
            let remaining = deadline.uptimeNanoseconds > DispatchTime.now().uptimeNanoseconds
                ? deadline.uptimeNanoseconds - DispatchTime.now().uptimeNanoseconds : 0
            do { try await Task.sleep(for: .nanoseconds(remaining)) } catch { return }
            guard publishFailingSince.load(ordering: .relaxed) == onset else { continue }  // published since
            logger.critical("cannot publish replies; exiting so the worker is restarted", metadata: [
                "publish_failure_timeout": "\(configuration.publishFailureTimeout)",
            ])
            throw PublishingFailed(timeout: configuration.publishFailureTimeout)
        }
    }

    struct PublishingFailed: Error, CustomStringConvertible {
        let timeout: Duration
        var description: String { "publishing replies kept failing for \(timeout) (PUBLISH_FAILURE_TIMEOUT)" }
    }
}
