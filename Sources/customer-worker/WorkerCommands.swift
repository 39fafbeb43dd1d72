import AMQP
import ArgumentParser
import CustomerWorker
import WorkerComposition
import Foundation
import Logging
import WorkerTracing

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the worker: consume create-customer commands and publish the replies.",
        discussion: "Every option also reads its environment variable. SIGTERM or SIGINT stop it gracefully.")

    @OptionGroup var options: WorkerOptions

    func run() async throws {
        let (configuration, logger) = try options.bootstrap(label: "customer-worker")
        do {
            // A tracing variable swift-otel cannot take is a usage error, like any other setting.
            _ = try TracingBackend.enabledEnvironment(configuration.tracingEnvironment(ProcessInfo.processInfo.environment))
        } catch {
            throw ValidationError(error.description)
        }
        let application = try WorkerApplication(configuration: configuration, logger: logger)
        logger.info("starting", metadata: [
            "amqp.url": "\(AMQPError.redacted(configuration.amqpURL))", "database": "\((try? configuration.databaseLocation)?.redacted ?? "?")",
        ])
        try await application.run()
    }
}

struct Publish: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish create-customer commands (one JSON object, or one per line) with publisher confirms.",
        discussion: """
            With --wait, waits for the replies through direct reply-to and prints each reply body as one \
            JSON line. Exit status: 0 if every reply was CustomerCreated, 1 otherwise, 3 on timeout.
            """)

    @Option(help: "The merchant's secret API key, sent in the x-api-key header (env API_KEY).") var apiKey: String?
    @Argument(help: "A JSON file with one command, or JSON lines with one command each; - or nothing reads standard input.")
    var file: String?
    @Option(help: "message_id of the command (one command only); default: a random UUID.") var messageId: String?
    @Flag(help: "Wait for the replies and print them.") var wait = false
    @Option(help: "Seconds to wait for the replies.") var timeout: Double = 30
    @OptionGroup var options: WorkerOptions

    func run() async throws {
        let bodies = try CommandInput.read(file)
        guard !bodies.isEmpty else { throw ValidationError("no command in \(file ?? "standard input")") }
        if messageId != nil, bodies.count > 1 { throw ValidationError("--message-id needs exactly one command, got \(bodies.count)") }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be 0 < seconds ≤ 86400, got \(timeout)") }
        let key = apiKey ?? ProcessInfo.processInfo.environment["API_KEY"]
        let commands = bodies.map { CommandClient.Command(body: $0, messageID: messageId ?? UUID().uuidString.lowercased()) }

        let (configuration, logger) = try options.bootstrap(label: "publish")
        let client = try await CommandClient(configuration: configuration, logger: logger)
        try await client.publish(commands, apiKey: key, wantReplies: wait)
        guard wait else {
            FileHandle.standardError.write(Data("published \(commands.count) command(s)\n".utf8))
            await client.close()
            return
        }
        let replies = try await client.replies(count: commands.count, timeout: .milliseconds(Int(timeout * 1000)))
        await client.close()
        for reply in replies { print(String(decoding: reply.body, as: UTF8.self)) }
        if replies.count < commands.count {
            FileHandle.standardError.write(Data("timed out: \(replies.count) of \(commands.count) replies after \(timeout) s\n".utf8))
            throw ExitCode(3)
        }
        if !replies.allSatisfy({ $0.properties.type == "CustomerCreated" }) { throw ExitCode(1) }
    }
}

struct Replies: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Read replies from the inspection queue and print one JSON line each (acknowledging them).")

    @Option(help: "Queue to read; default: the replies queue (REPLIES_QUEUE).") var queue: String?
    @Option(help: "Stop after this many replies.") var count: Int?
    @Option(help: "Stop when no reply came for this many seconds.") var timeout: Double = 5
    @OptionGroup var options: WorkerOptions

    func run() async throws {
        if let count, count < 1 { throw ValidationError("--count must be at least 1") }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be 0 < seconds ≤ 86400, got \(timeout)") }
        let (configuration, logger) = try options.bootstrap(label: "replies")
        let client = try await CommandClient(configuration: configuration, logger: logger)
        let read = try await client.read(queue: queue, count: count, idleTimeout: .milliseconds(Int(timeout * 1000))) { reply in
            print(String(decoding: reply.body, as: UTF8.self))
        }
        await client.close()
        if let count, read < count { throw ExitCode(3) }
    }
}

struct Health: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exit 0 when the broker answers and the database is writable (a container health check).")

    @OptionGroup var options: WorkerOptions

    func run() async throws {
        do {
            let (configuration, logger) = try options.bootstrap(label: "health")
            try await WorkerApplication.checkHealth(configuration: configuration, logger: logger)
            print("ok")
        } catch {
            FileHandle.standardError.write(Data("unhealthy: \(error)\n".utf8))
            throw ExitCode.failure
        }
    }
}

/// Commands from a file or standard input: a single JSON document, or JSON lines.
enum CommandInput {
    static func read(_ path: String?) throws -> [[UInt8]] {
        let data: Data
        if let path, path != "-" {
            guard let contents = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
            data = contents
        } else {
            data = FileHandle.standardInput.readDataToEndOfFile()
        }
        // A whole-file JSON object is one command even when pretty-printed over many lines.
        if (try? JSONSerialization.jsonObject(with: data)) is [String: Any] {
            return [Array(data)]
        }
        return data.split(separator: UInt8(ascii: "\n")).map { Array($0) }.filter { line in
            line.contains { !($0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r")) }
        }
    }
}
