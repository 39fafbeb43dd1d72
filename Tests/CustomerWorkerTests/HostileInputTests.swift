import AMQP
import BrokerTestSupport
import CreateCustomer
import CustomerWorker
import Foundation
import Testing

/// Issue 17: a hostile sender and a hurried operator, against a real worker process and broker.
@Suite("Worker: hostile input", .closesResources, .enabled(if: TestBroker.enabled, "no broker: run scripts/broker.sh start"))
struct HostileInputTests {
    /// A fixture, a merchant and a worker process for `body`; the worker is stopped (it must exit
    /// 0) and everything torn down on every path.
    private func withWorker(_ name: String, environment: (WorkerFixture) -> [String: String] = { _ in [:] },
                            _ body: (WorkerFixture, ObservedWorker, MerchantCredentials) async throws -> Void) async throws {
        let fixture = try await WorkerFixture(name)
        do {
            let merchant = try await fixture.merchant()
            let worker = try ObservedWorker(fixture, name: "worker", environment: environment(fixture))
            do {
                try await body(fixture, worker, merchant)
            } catch {
                await worker.process.terminate()
                let log = (try? String(contentsOfFile: worker.log, encoding: .utf8)) ?? ""
                Issue.record("the worker's log ends with:\n\(log.split(separator: "\n").suffix(15).joined(separator: "\n"))")
                throw error
            }
            let status = try await worker.stop()
            if status == nil { await worker.process.terminate() }
            #expect(status == 0, "the worker exits 0 on SIGTERM")
        } catch {
            await fixture.tearDown()
            throw error
        }
        await fixture.tearDown()
    }

    /// Reads the events copies until every id in `expected` is there, then `settle` longer for extras.
    private func events(_ fixture: WorkerFixture, for expected: Set<String>, settle: Duration = .seconds(1)) async throws -> [Delivery] {
        var events: [Delivery] = []
        let deadline = ContinuousClock.now + .seconds(30)
        while !expected.isSubset(of: Set(events.compactMap(\.properties.correlationID))), ContinuousClock.now < deadline {
            events += try await fixture.drain(fixture.configuration.names.repliesQueue, idle: .milliseconds(300))
        }
        events += try await fixture.drain(fixture.configuration.names.repliesQueue, idle: settle)
        return events
    }

    private func error(_ reply: Delivery) throws -> (code: String, message: String, fields: [String]) {
        let error = try #require(try json(reply)["error"] as? [String: Any], "a CustomerCreateFailed reply")
        let fields = (error["fields"] as? [[String: Any]] ?? []).map { "\($0["field"] ?? ""):\($0["code"] ?? "")" }
        return (try #require(error["code"] as? String), try #require(error["message"] as? String), fields)
    }

    /// REPLY_TO_PATTERN matches every queue of the worker's topology; a reply_to naming each of
    /// them gets no copy (nothing lands there: the command queue would hand it back to the worker,
    /// which would answer it again), while another queue the pattern allows gets one. The first
    /// refusal is logged with its message_id, whose newline is escaped: one line, no forged one.
    @Test func ownQueuesAreNeverReplyToTargets() async throws {
        let forged = "2026-12-01T00:00:00+0000 notice customer-worker : admin=true forged line"
        try await withWorker("own-queues", environment: { fixture in
            let prefix = String(fixture.configuration.names.commandQueue.dropLast(".create".count))
            return ["REPLY_TO_PATTERN": NSRegularExpression.escapedPattern(for: prefix) + #"\..*"#, "LOG_LEVEL": "info"]
        }) { fixture, worker, merchant in
            let names = fixture.configuration.names
            let allowed = String(names.commandQueue.dropLast(".create".count)) + ".allowed"
            let owner = try await TestBroker.session("own-queues.owner")
            do {
                try await owner.declareQueueOnce(.init(name: allowed))
                try await fixture.publishRaw([(#"{"externalId":"to-command-queue"}"#, "own-1\n" + forged, names.commandQueue)],
                                             apiKey: merchant.secretKey)
                _ = try await events(fixture, for: ["own-1\n" + forged], settle: .zero)
                try await fixture.publishRaw([
                    (#"{"externalId":"to-dead-letters"}"#, "own-2", names.deadLetterQueue),
                    (#"{"externalId":"to-replies"}"#, "own-3", names.repliesQueue),
                    (#"{"externalId":"to-allowed"}"#, "own-4", allowed),
                ], apiKey: merchant.secretKey)
                let answered = try await events(fixture, for: ["own-2", "own-3", "own-4"])
                #expect(Set(answered.compactMap(\.properties.correlationID)) == ["own-2", "own-3", "own-4"],
                        "one events copy each, no copy in the replies queue, nothing answered twice")
                #expect(answered.count == 3)
                #expect(answered.allSatisfy { $0.properties.type == "CustomerCreated" }, "the commands are handled normally")
                #expect(try await fixture.drain(names.deadLetterQueue, idle: .milliseconds(300)).isEmpty)
                #expect(try await fixture.drain(allowed).compactMap(\.properties.correlationID) == ["own-4"])
                #expect(await worker.metric(#"customer_worker_reply_to_undelivered_total{reason="refused"}"#) == 3)
                #expect(await worker.metric("customer_worker_commands_received_total") == 4, "no reply came back as a command")
            } catch {
                try? await owner.deleteQueue(allowed)
                await owner.close()
                throw error
            }
            try await owner.deleteQueue(allowed)
            await owner.close()
            let lines = try String(contentsOfFile: worker.log, encoding: .utf8).split(separator: "\n")
            let refusals = lines.filter { $0.contains("reply_to not allowed") }
            #expect(refusals.count == 1, "logged once per interval, not once per command: \(refusals)")
            #expect(refusals.first?.contains(#"own-1\n2026-12-01"#) == true, "the newline is escaped: \(refusals)")
            #expect(!lines.contains { $0.hasPrefix("2026-12-01T00:00:00+0000") }, "no forged line")
        }
    }

    /// Duplicate keys, trailing commas, U+FEFF at either end of externalId and NUL in every
    /// free-text field: each answered with the precise error, naming the key or the field.
    @Test func strictJSONAndControlCharactersAreAnsweredPrecisely() async throws {
        try await withWorker("strict-json") { fixture, _, merchant in
            let textFields = ["name", "billingAddress1", "billingAddress2", "billingCity", "billingState", "shippingAddress1",
                              "shippingAddress2", "shippingCity", "shippingState", "quickBooksId", "stripeId"]
            var bodies: [(id: String, json: String)] = [
                ("duplicate", #"{"externalId":"dk-first","name":"x","externalId":"dk-last"}"#),
                ("nested-duplicate", #"{"externalId":"dk-nested","zz":{"a":1,"a":2}}"#),
                ("trailing-comma", #"{"externalId":"tc-1",}"#),
                ("feff-start", #"{"externalId":"\ufeffcus-1"}"#),
                ("feff-end", #"{"externalId":"cus-1\ufeff"}"#),
                ("nul-email", #"{"externalId":"nul-email","email":"ada\u0000@example.com"}"#),
            ]
            bodies += textFields.map { ("nul-\($0)", #"{"externalId":"nul-\#($0)","\#($0)":"before\u0000after"}"#) }
            let commands = bodies.map { CommandClient.Command(body: Array($0.json.utf8), messageID: $0.id, correlationID: $0.id) }
            let replies = try await fixture.send(commands, apiKey: merchant.secretKey)
            let byID = Dictionary(replies.map { ($0.properties.correlationID ?? "", $0) }) { first, _ in first }
            #expect(Set(byID.keys) == Set(bodies.map(\.id)), "every command answered")

            for (id, key) in [("duplicate", "externalId"), ("nested-duplicate", "a")] {
                let failure = try error(try #require(byID[id]))
                #expect(failure.code == "malformed_message", "\(id): \(failure)")
                #expect(failure.message.contains("\"\(key)\""), "names the key: \(failure.message)")
            }
            #expect(try error(try #require(byID["trailing-comma"])).code == "malformed_message")
            for id in ["feff-start", "feff-end"] {
                let failure = try error(try #require(byID[id]))
                #expect(failure.code == "validation_failed")
                #expect(failure.fields == ["externalId:surrounding_whitespace"], "\(id): \(failure)")
            }
            for field in textFields + ["email"] {
                let failure = try error(try #require(byID["nul-\(field)"]))
                #expect(failure.code == "validation_failed")
                #expect(failure.fields == ["\(field):control_characters"], "\(field): \(failure)")
            }
        }
    }

    /// Headers nested 20,000 levels (tables with empty keys, then arrays), each within one frame:
    /// answered `malformed_message`, and the next, normal command is answered on the same connection.
    /// They are published (with confirms) once the worker is ready, and the normal command's reply
    /// may take up to two minutes: RabbitMQ takes seconds to encode such a table for delivery (3.5 s
    /// from `basic.consume` to the first deep delivery, 4.3.6 with the worker under strace), and
    /// the normal command waits behind them in the merchant's shard. On a loaded CI machine that
    /// was more than the fixture's 30 s (a CI run on 2026-12-07). Queued before the worker started,
    /// they made a later `basic.consume` wait behind their encoding: its `consume-ok` came after
    /// the 30 s RPC timeout in another CI run that day, and the worker stopped at startup.
    @Test func deeplyNestedHeadersAreMalformedAndTheWorkerStaysUp() async throws {
        try await withWorker("deep-headers") { fixture, worker, merchant in
            try #require(try await worker.poll("/readyz", until: 200, timeout: .seconds(60)), "never ready")
            let names = fixture.configuration.names
            for (kind, id) in [(DeepHeaders.Kind.tables, "deep-tables"), (.arrays, "deep-arrays")] {
                try await DeepHeaders.publish(kind, depth: 20_000, exchange: names.commandExchange, routingKey: names.commandRoutingKey,
                                              body: #"{"externalId":"\#(id)"}"#, messageID: id, apiKey: merchant.secretKey)
            }
            // Three levels with an empty key inside: readable, so an ordinary command.
            try await DeepHeaders.publish(.tables, depth: 3, exchange: names.commandExchange, routingKey: names.commandRoutingKey,
                                          body: #"{"externalId":"empty-key"}"#, messageID: "empty-key", apiKey: merchant.secretKey)
            let afterDeep = CommandClient.Command(body: Array(#"{"externalId":"after-deep"}"#.utf8), messageID: "after-deep")
            let normal = try #require(try await fixture.send([afterDeep], apiKey: merchant.secretKey, timeout: .seconds(120)).first)
            #expect(normal.properties.type == "CustomerCreated")
            let deep = try await events(fixture, for: ["deep-tables", "deep-arrays", "empty-key", "after-deep"])
            #expect(deep.first { $0.properties.correlationID == "empty-key" }?.properties.type == "CustomerCreated",
                    "a header with an empty key is no reason to drop the connection")
            for id in ["deep-tables", "deep-arrays"] {
                let reply = try #require(deep.first { $0.properties.correlationID == id })
                let failure = try error(reply)
                #expect(failure.code == "malformed_message", "\(id): \(failure)")
                #expect(failure.message.contains("64 levels"))
            }
            #expect(try await worker.process.waitForExit(timeout: .zero) == nil, "the worker is still running")
            #expect(await worker.metric("customer_worker_reconnects_total") ?? 0 == 0, "the connection stayed up")
        }
    }
}
