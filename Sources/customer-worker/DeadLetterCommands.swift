import ArgumentParser
import CustomerWorker
import Foundation

struct DeadLetters: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dead-letters",
        abstract: "Inspect, replay or purge the commands in the dead-letter queue (DEAD_LETTER_QUEUE).",
        discussion: """
            Reading leaves the dead letters in the queue. A replay publishes each command back to the command \
            exchange with publisher confirms and removes the dead letter only after its copy is confirmed: a crash \
            mid-replay can duplicate a command, never lose one, and the worker's idempotency makes the duplicate \
            harmless. API keys are shown as their key id (sk_<id>), never the key.
            """,
        subcommands: [List.self, Show.self, Replay.self, Purge.self])

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List dead letters from the head of the queue: id, key id, externalId, first death reason and queue, deliveries, age.")

        @Option(help: "Show at most this many (1...\(DeadLetterQueue.maximumScan)).") var limit = 100
        @Flag(help: "One JSON object per line instead of the table.") var json = false
        @OptionGroup var options: WorkerOptions

        func validate() throws {
            guard (1...DeadLetterQueue.maximumScan).contains(limit) else {
                throw ValidationError("--limit must be 1...\(DeadLetterQueue.maximumScan), got \(limit)")
            }
        }

        func run() async throws {
            try await withQueue(options, label: "dead-letters") { queue in
                let total = try await queue.count()
                let letters = try await queue.browse(limit: limit)
                let now = Date()
                if json {
                    for letter in letters { print(try DeadLetterOutput.line(letter.summary(now: now))) }
                } else {
                    print(DeadLetterOutput.table(letters, now: now))
                }
                DeadLetterOutput.note("\(total) dead letter(s) in \(await queue.queueName); \(letters.count) shown")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Print one dead letter (its death, properties and body) as JSON. Exit status 1 when it is not in the queue.")

        @Argument(help: "The dead letter's id, as `list` shows it (the command's message_id).") var id: String
        @OptionGroup var options: WorkerOptions

        func run() async throws {
            try await withQueue(options, label: "dead-letters") { queue in
                guard let letter = try await queue.find([id]).first else {
                    throw DeadLetterQueue.DeadLetterError.notFound([id])
                }
                print(try DeadLetterOutput.pretty(letter.details()))
            }
        }
    }

    struct Replay: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Publish dead letters back to the command exchange (confirmed), then remove them from the dead-letter queue.",
            discussion: "Prints the id of each replayed dead letter. Exit status 1 when an id is not in the queue or a copy was not taken.")

        @Flag(help: "Every dead letter in the queue when the replay starts.") var all = false
        @Argument(help: "Ids of the dead letters to replay (as `list` shows them).") var ids: [String] = []
        @Flag(help: "Print what would be replayed; publish and remove nothing.") var dryRun = false
        @Option(help: "Copies per confirmed batch (1...10000).") var batchSize = 100
        @OptionGroup var options: WorkerOptions

        func validate() throws {
            guard all == ids.isEmpty else { throw ValidationError("pass either --all or one or more ids") }
            guard (1...10_000).contains(batchSize) else { throw ValidationError("--batch-size must be 1...10000, got \(batchSize)") }
        }

        func run() async throws {
            try await withQueue(options, label: "dead-letters") { queue in
                let dryRun = dryRun
                let report = try await queue.replay(ids: all ? nil : Set(ids), dryRun: dryRun, batchSize: batchSize) { letter in
                    print(dryRun ? "would replay \(letter.id)" : "replayed \(letter.id)")
                }
                for id in report.duplicated { print("replayed \(id) (its dead letter stayed: the connection dropped before the ack)") }
                let done = dryRun ? "\(report.wouldReplay.count) would be replayed" : "\(report.replayed.count + report.duplicated.count) replayed"
                DeadLetterOutput.note("\(done) from \(await queue.queueName)")
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Delete every dead letter. Needs --yes.")

        @Flag(help: "Confirm: the dead letters are deleted for good.") var yes = false
        @OptionGroup var options: WorkerOptions

        func validate() throws {
            guard yes else { throw ValidationError("purge deletes every dead letter for good: pass --yes to confirm") }
        }

        func run() async throws {
            try await withQueue(options, label: "dead-letters") { queue in
                let purged = try await queue.purge()
                print("purged \(purged) dead letter(s) from \(await queue.queueName)")
            }
        }
    }
}

/// Opens the dead-letter queue with the worker's settings, runs `body`, closes it on every path.
private func withQueue(_ options: WorkerOptions, label: String, _ body: (DeadLetterQueue) async throws -> Void) async throws {
    let (configuration, logger) = try options.bootstrap(label: label)
    let queue = try await DeadLetterQueue(configuration: configuration, logger: logger)
    do {
        try await body(queue)
    } catch {
        await queue.close()
        throw error
    }
    await queue.close()
}

enum DeadLetterOutput {
    static func note(_ text: String) {
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }

    static func line(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes]), as: UTF8.self)
    }

    static func pretty(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes]),
               as: UTF8.self)
    }

    static func table(_ letters: [DeadLetter], now: Date) -> String {
        let header = ["ID", "API KEY", "EXTERNAL ID", "REASON", "QUEUE", "DEATHS", "DELIVERIES", "AGE"]
        let rows = letters.map { letter in
            [letter.id, letter.apiKeyID ?? "-", letter.externalId ?? "-", letter.reason ?? "-", letter.queue ?? "-",
             "\(letter.deaths)", letter.deliveryCount.map(String.init) ?? "-", letter.age(now: now).map(age) ?? "-"]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max() ?? 0 }
        return ([header] + rows).map { row in
            zip(row, widths).map { $0.padding(toLength: $1, withPad: " ", startingAt: 0) }.joined(separator: "  ")
                .trimmingCharacters(in: .whitespaces)
        }.joined(separator: "\n")
    }

    static func age(_ seconds: TimeInterval) -> String {
        let whole = Int(seconds)
        switch whole {
        case ..<120: return "\(whole)s"
        case ..<7200: return "\(whole / 60)m"
        case ..<172_800: return "\(whole / 3600)h"
        default: return "\(whole / 86400)d"
        }
    }
}
