import AMQP
import Foundation
import Logging
import Observability
import DatabaseURL
import WorkerTracing

/// Names of everything the worker declares; each one is a setting.
public struct TopologyNames: Sendable, Hashable {
    public var commandExchange = "customers.commands"
    public var commandRoutingKey = "customer.create"
    public var commandQueue = "customers.create"
    public var deadLetterExchange = "customers.dead-letter"
    public var deadLetterQueue = "customers.create.dead"
    public var eventsExchange = "customers.events"
    public var repliesQueue = "customers.replies"
    public var repliesBindingKey = "customer.#"

    public init() {}

    /// Every queue and exchange under `prefix.` (routing and binding keys keep their defaults):
    /// a topology of its own for a test or a benchmark run.
    public init(prefix: String) {
        commandExchange = "\(prefix).commands"
        commandQueue = "\(prefix).create"
        deadLetterExchange = "\(prefix).dead-letter"
        deadLetterQueue = "\(prefix).create.dead"
        eventsExchange = "\(prefix).events"
        repliesQueue = "\(prefix).replies"
    }
}

/// Every setting of the worker, read from its flag, else its environment variable, else the
/// default. Each setting is declared once, as a row of `WorkerConfiguration.settings`: its
/// variable, flag, default, validation, help text and whether it is a secret. `--help`, the
/// README's table (checked by a test), `environmentVariables` and the CLI's flags (checked by a
/// test against the executable's own help) all come from that row.
public struct WorkerConfiguration: Sendable {
    public var amqpURL = "amqp://guest:guest@127.0.0.1:5672/%2f"
    /// `DATABASE_URL`: a SQLite file path or `sqlite:` URL, or a `postgres://` URL.
    public var databaseURL = "./data/customers.sqlite"
    /// Unacknowledged commands the broker may hand us at once (a batch takes at most half).
    public var prefetch = 256
    /// How long a batch waits for more commands after the first arrived.
    public var batchLinger: Duration = .milliseconds(2)
    /// Every change (a setting, a test's prefix) also refreshes `replyTo.ownQueues`.
    public var names = TopologyNames() {
        didSet { replyTo.ownQueues = ownQueueNames }
    }
    /// Deliveries of one command before the quorum queue dead-letters it.
    public var deliveryLimit = 5
    /// Shards of the command queue, by a hash of the merchant's key (`FairShare`); 0 → off.
    /// Every change also refreshes `replyTo.ownQueues` (the shards are the worker's own queues).
    /// On by default: 8 shards (BENCHMARKS.md, "Fair share per merchant", measures the cost).
    public var fairShareShards = 8 {
        didSet { replyTo.ownQueues = ownQueueNames }
    }
    /// Bound of the inspection queue; the oldest replies are dropped beyond it.
    public var repliesMaxLength = 100_000
    public var shutdownTimeout: Duration = .seconds(10)
    public var databaseBusyTimeout: Duration = .seconds(5)
    /// SQLite `synchronous`: FULL (durable through a power loss) unless NORMAL is chosen.
    public var databaseSynchronous: DatabaseSynchronous = .full
    public var confirmTimeout: Duration = .seconds(30)
    /// How long publishing replies may keep failing before the worker exits non-zero (so an
    /// orchestrator restarts it) instead of holding commands.
    public var publishFailureTimeout: Duration = .seconds(300)
    /// Attempts at publishing a batch's replies before its commands are returned to the queue
    /// (which counts toward the delivery limit). A failing database never returns commands: the
    /// worker pauses and retries with `transientBackoff` until it recovers.
    public var transientAttempts = 5
    public var transientBackoff = RecoveryPolicy(initialDelay: .milliseconds(200), maximumDelay: .seconds(5))
    /// While the store keeps failing, commands held this long (from their delivery) are handed
    /// back to the queue unspent, and the worker stops consuming until the store answers: well
    /// below the broker's acknowledgement timeout (`consumer_timeout`, 30 minutes by default),
    /// which AMQP 0-9-1 gives a client no way to read.
    public var handBackAfter: Duration = .seconds(60)
    public var reconnect = RecoveryPolicy(initialDelay: .milliseconds(200), maximumDelay: .seconds(15))
    /// Which `reply_to` names get a copy of the reply (`REPLY_TO_PATTERN`, `REPLY_TO_SERVER_NAMED`).
    /// Whatever policy is set, it refuses the worker's own queues.
    public var replyTo = ReplyToPolicy() {
        didSet { if replyTo.ownQueues != ownQueueNames { replyTo.ownQueues = ownQueueNames } }
    }
    /// Port of the HTTP listener for /healthz, /readyz and /metrics; nil → off.
    public var httpPort: Int?
    public var appID = "customer-worker"
    public var logLevel: Logger.Level = .info
    public var logFormat: LogFormat = .text
    /// The OpenTelemetry variables the settings table carries (flags win over the environment);
    /// the others reach swift-otel from the environment as the specification defines them.
    public var tracing = TracingSettings()

    public struct TracingSettings: Sendable, Hashable {
        /// `OTEL_EXPORTER_OTLP_ENDPOINT`; nil → tracing off.
        public var endpoint: String?
        public var serviceName = "customer-worker"
        public var sampler = "parentbased_always_on"
    }

    /// `environment` with the tracing settings in it: what `TracingBackend` reads.
    public func tracingEnvironment(_ environment: [String: String]) -> [String: String] {
        var environment = environment
        if let endpoint = tracing.endpoint { environment["OTEL_EXPORTER_OTLP_ENDPOINT"] = endpoint }
        environment["OTEL_SERVICE_NAME"] = tracing.serviceName
        environment["OTEL_TRACES_SAMPLER"] = tracing.sampler
        return environment
    }

    public init() {
        replyTo.ownQueues = ownQueueNames
    }

    /// Every queue the topology declares: never a `reply_to` target.
    var ownQueueNames: Set<String> { Set(topology.queues.map(\.name)) }

    /// One row of the settings table: everything about one setting.
    public struct Setting: Sendable {
        public let variable: String
        public let flag: String
        /// The default as shown (a URL without its password).
        public let defaultValue: String
        public let meaning: String
        /// The value may carry a password: errors, help and logs show it redacted.
        public let isSecret: Bool
        let apply: @Sendable (inout WorkerConfiguration, String) throws(ConfigurationError) -> Void
        /// The value of this setting in a configuration, as its variable takes it; nil when unset.
        let render: @Sendable (WorkerConfiguration) -> String?

        /// The `--help` text of the setting's flag.
        public var help: String {
            "\(meaning)\(isSecret ? " Secret: shown without its password." : "") (env \(variable); default \(defaultValue))"
        }
    }

    /// The setting behind `variable`, if there is one.
    public static func setting(_ variable: String) -> Setting? {
        settings.first { $0.variable == variable }
    }

    /// The README's table of settings, generated from `settings` (a test keeps the README equal to it).
    public static var markdownTable: String {
        let rows = settings.map { setting in
            let cells = ["`\(setting.variable)`", "`--\(setting.flag)`", "`\(setting.defaultValue)`", setting.isSecret ? "yes" : "",
                         setting.meaning.replacingOccurrences(of: "|", with: "\\|")]
            return "| " + cells.joined(separator: " | ") + " |"
        }
        return (["| environment variable | flag | default | secret | meaning |", "|---|---|---|---|---|"] + rows).joined(separator: "\n")
    }

    /// Reads every setting from `lookup` (environment variable name → value). Unset or empty
    /// values keep the default; invalid ones throw an error that names the variable.
    public init(lookup: (String) -> String?) throws(ConfigurationError) {
        self.init()
        for setting in Self.settings {
            guard let raw = lookup(setting.variable), !raw.isEmpty else { continue }
            try setting.apply(&self, raw)
        }
    }

    public static func fromEnvironment(_ environment: [String: String] = ProcessInfo.processInfo.environment) throws(ConfigurationError) -> WorkerConfiguration {
        try WorkerConfiguration { environment[$0] }
    }

    /// The longest the worker's consume loop may legitimately go without turning, derived from
    /// the settings: a transaction waiting for the database lock, then a batch's replies through
    /// every attempt (each waiting up to the confirm timeout, then backing off), plus one broker
    /// connect and reconnect delay, plus a minute of margin. Liveness fails only beyond it.
    public var livenessWindow: Duration {
        let replies = (confirmTimeout + transientBackoff.maximumDelay) * transientAttempts
        return databaseBusyTimeout + replies + reconnect.maximumDelay + .seconds(10) + .seconds(60)
    }

    /// Retrying a failing store: the publishing backoff, capped at a second, so the worker serves
    /// again within about a second of the database's return, whatever the outage's length.
    public var storeRetryBackoff: RecoveryPolicy {
        RecoveryPolicy(initialDelay: min(transientBackoff.initialDelay, .seconds(1)), maximumDelay: min(transientBackoff.maximumDelay, .seconds(1)))
    }

    /// Half the prefetch window: while one batch waits for its confirms (holding its deliveries
    /// unacknowledged), the broker can already hand over the next one for the transaction stage.
    public var batchLimit: Int { max(1, prefetch / 2) }

    /// The environment that gives a `customer-worker run` process this configuration: every
    /// setting's variable with its value (the inverse of `init(lookup:)`).
    public var environmentVariables: [String: String] {
        Dictionary(uniqueKeysWithValues: Self.settings.compactMap { setting in setting.render(self).map { (setting.variable, $0) } })
    }

    public var databaseLocation: DatabaseLocation {
        get throws(DatabaseLocationError) { try DatabaseLocation(databaseURL) }
    }

    /// The first broker node of `AMQP_URL` (the only one unless it lists several).
    public var amqpConfiguration: ConnectionConfiguration {
        get throws(AMQPError) { try amqpNodes[0] }
    }

    /// Every broker node of `AMQP_URL`, a comma-separated list of URLs.
    public var amqpNodes: [ConnectionConfiguration] {
        get throws(AMQPError) { try ConnectionConfiguration.list(amqpURL) }
    }
}

/// SQLite's `synchronous` as the worker's setting names it (the composition root maps it to the
/// store's own type, so this library links no concrete store for it).
public enum DatabaseSynchronous: String, Sendable, Hashable {
    /// Every commit is fsynced: an acknowledged customer survives a power loss.
    case full
    /// WAL mode syncs at checkpoints only: faster commits, the last ones lost to a power loss.
    case normal
}

/// A setting with a value it cannot take; the message names the variable and the rule.
public struct ConfigurationError: Error, Sendable, CustomStringConvertible {
    public let variable: String
    public let flag: String
    /// The value as given, with any URL password masked: errors never echo secrets.
    public let value: String
    public let rule: String

    public init(variable: String, flag: String, value: String, rule: String) {
        self.variable = variable
        self.flag = flag
        self.value = Redaction.redactingCredentials(in: value)
        self.rule = Redaction.redactingCredentials(in: rule)
    }

    public var description: String { "invalid \(variable) (--\(flag)) '\(value)': \(rule)" }
}

extension WorkerConfiguration {
    public static let settings: [Setting] = [
        text("AMQP_URL", "amqp-url", \.amqpURL, secret: true, "Broker URL: amqp[s]://user:pass@host:port/vhost (query: heartbeat, connection_timeout, cacertfile, certfile, keyfile, verify); a comma-separated list for the nodes of a cluster, tried shuffled, then round robin. The default's password is `guest`; passwords are shown as `***` in help, errors and logs.") { url in
            do { _ = try ConnectionConfiguration.list(url) } catch { return "\(error)" }
            return nil
        },
        database("DATABASE_PATH", "database-path", shownInEnvironment: false, "Deprecated: a SQLite file, as DATABASE_URL takes it; DATABASE_URL wins when both are set."),
        database("DATABASE_URL", "database", shownInEnvironment: true, "SQLite file path or `sqlite:PATH` (created with its folder on first use; replicas on one host share it), or `postgres://user:password@host:port/database?sslmode=disable|prefer|require|verify-ca|verify-full&sslrootcert=FILE&pool_size=N&connect_timeout=SECONDS&answer_timeout=SECONDS` for replicas on several hosts (docs/operations.md); the password never appears in logs or errors."),
        integer("PREFETCH", "prefetch", \.prefetch, 1...65_535, "Unacknowledged commands per worker; a batch (one transaction) takes at most half of them, so the next batch arrives while the last one's replies are confirmed."),
        milliseconds("BATCH_LINGER_MS", "batch-linger-ms", \.batchLinger, 0...1000, "How long a batch waits for more commands after the first arrived."),
        seconds("SHUTDOWN_TIMEOUT", "shutdown-timeout", \.shutdownTimeout, 1...600, "Seconds SIGTERM/SIGINT may take: stop consuming, finish the batch in hand, exit 0."),
        milliseconds("DATABASE_BUSY_TIMEOUT_MS", "database-busy-timeout-ms", \.databaseBusyTimeout, 1...600_000, "How long a transaction waits for another process holding the SQLite database lock, trying again every millisecond."),
        parsed("DATABASE_SYNCHRONOUS", "database-synchronous", \.databaseSynchronous,
               "full: every commit is fsynced, so an acknowledged customer survives a power loss. normal: faster commits, but a power loss or kernel crash can lose the last acknowledged customers (their senders' retries then create new ids); only for data you can lose.",
               rule: "must be full or normal", render: { $0.rawValue }) { DatabaseSynchronous(rawValue: $0.lowercased()) },
        seconds("CONFIRM_TIMEOUT", "confirm-timeout", \.confirmTimeout, 1...600, "Seconds to wait for the broker to confirm a batch of replies."),
        seconds("PUBLISH_FAILURE_TIMEOUT", "publish-failure-timeout", \.publishFailureTimeout, 5...86_400, "Seconds publishing replies may keep failing (broker refusing them, exchange gone and not re-declarable) before the worker exits non-zero."),
        integer("TRANSIENT_ATTEMPTS", "transient-attempts", \.transientAttempts, 1...100, "Attempts at publishing a batch's replies (not confirmed in time) before its commands are requeued. A failing database (busy, full, read-only, unreachable) never requeues: the worker holds the batch, pauses (not ready) and retries with backoff up to 1 s until it recovers (HAND_BACK_AFTER)."),
        seconds("HAND_BACK_AFTER", "hand-back-after", \.handBackAfter, 1...1500, "Seconds the worker may hold commands while the database keeps failing; then it hands them back to the queue unspent (each republished unchanged with confirms, then acknowledged: no delivery counted), stops consuming, and consumes again once the database answers. Keep it well below the broker's consumer_timeout (30 min by default; RabbitMQ 3.10 checks it every channel_tick_interval, 60 s)."),
        integer("DELIVERY_LIMIT", "delivery-limit", \.deliveryLimit, 1...1000, "Deliveries of a command before the queue dead-letters it (x-delivery-limit; must match the existing queue)."),
        integer("FAIR_SHARE_SHARDS", "fair-share-shards", \.fairShareShards, 0...FairShare.maximumShards, "Fair share per merchant: commands are sharded by a hash of their `x-api-key` over this many quorum queues (COMMAND_QUEUE.0, .1, …, fed by the consistent-hash exchange COMMAND_EXCHANGE.fair; the broker needs the rabbitmq_consistent_hash_exchange plugin), each consumed with its own PREFETCH window, so one merchant's backlog never holds another merchant's commands back (unless both hash to the same shard). PREFETCH applies per queue consumed, so a worker may hold PREFETCH × (shards + 1) commands. 0: off, one queue for all (COMMAND_QUEUE). Every replica must use the same value (docs/operations.md)."),
        integer("REPLIES_MAX_LENGTH", "replies-max-length", \.repliesMaxLength, 1...100_000_000, "Replies kept in the inspection queue; the oldest are dropped beyond it (x-max-length, drop-head)."),
        parsed("REPLY_TO_PATTERN", "reply-to-pattern", \.replyTo, unset: "none",
               "Regular expression (whole name) of further queues a command's reply_to may name. Always allowed: direct reply-to (amq.rabbitmq.reply-to.…), and server-named queues (amq.gen-…) unless REPLY_TO_SERVER_NAMED=refuse. Never allowed, whatever the pattern: the worker's own queues (command, dead-letter, replies). A reply_to that is not allowed is ignored (the events copy stands), counted and logged (once a minute).",
               rule: "must be a valid regular expression", render: { $0.pattern }) { try? ReplyToPolicy(pattern: $0) },
        // After REPLY_TO_PATTERN, which replaces the whole policy.
        parsed("REPLY_TO_SERVER_NAMED", "reply-to-server-named", \.replyTo.allowsServerNamed,
               "allow or refuse: whether a reply_to may name a server-named queue (amq.gen-…) without matching REPLY_TO_PATTERN. Such a name is random; a sender only knows it if it declared the queue or was told.",
               rule: "must be allow or refuse", render: { $0 ? "allow" : "refuse" }) { ["allow": true, "refuse": false][$0.lowercased()] },
        parsed("HTTP_PORT", "http-port", \.httpPort, "Port of the HTTP listener for /healthz, /readyz and /metrics; off when unset.",
               rule: "must be a port number 0...65535", render: { $0.map(String.init) }) { raw -> Int?? in
            guard let port = Int(raw), (0...65_535).contains(port) else { return nil }
            return .some(port)
        },
        parsed("LOG_LEVEL", "log-level", \.logLevel, "trace, debug, info, notice, warning, error or critical.",
               rule: "must be trace, debug, info, notice, warning, error or critical", render: { $0.rawValue }, parse: parseLogLevel),
        parsed("LOG_FORMAT", "log-format", \.logFormat, "text, or json for one JSON object per line.",
               rule: "must be text or json", render: { $0.rawValue }) { LogFormat(parsing: $0) },
        parsed("OTEL_EXPORTER_OTLP_ENDPOINT", "otel-exporter-otlp-endpoint", \.tracing.endpoint,
               "Base URL of an OpenTelemetry collector taking OTLP over HTTP (e.g. `http://collector:4318`; spans go to `/v1/traces`): a span per command, its database transaction and its replies' confirms, with `traceparent` read from the command and written into the reply. Off when unset. The other `OTEL_*` variables (`OTEL_EXPORTER_OTLP_HEADERS`, `OTEL_TRACES_SAMPLER_ARG`, `OTEL_BSP_*`, …) are read as the OpenTelemetry specification defines them (docs/operations.md).",
               rule: "must be an http:// or https:// URL", render: { $0 }) { raw -> String?? in
            TracingBackend.problem("OTEL_EXPORTER_OTLP_ENDPOINT", raw) == nil ? .some(raw) : nil
        },
        parsed("OTEL_SERVICE_NAME", "otel-service-name", \.tracing.serviceName,
               "`service.name` of the worker's spans.", rule: "must be 1 to 255 characters", render: { $0 }) { raw in
            raw.utf8.count <= 255 ? raw : nil
        },
        parsed("OTEL_TRACES_SAMPLER", "otel-traces-sampler", \.tracing.sampler,
               "Which traces are recorded: \(TracingBackend.samplers.joined(separator: ", ")) (ratio in `OTEL_TRACES_SAMPLER_ARG`). The default follows the sender's decision and samples what starts here.",
               rule: "must be one of \(TracingBackend.samplers.joined(separator: ", "))", render: { $0 }) { raw in
            TracingBackend.samplers.contains(raw) ? raw : nil
        },
        name("COMMAND_EXCHANGE", "command-exchange", \.names.commandExchange, "Direct exchange the commands are published to."),
        name("COMMAND_ROUTING_KEY", "command-routing-key", \.names.commandRoutingKey, "Routing key of create-customer commands."),
        name("COMMAND_QUEUE", "command-queue", \.names.commandQueue, "Quorum queue the worker consumes."),
        name("DEAD_LETTER_EXCHANGE", "dead-letter-exchange", \.names.deadLetterExchange, "Fanout exchange for commands past the delivery limit."),
        name("DEAD_LETTER_QUEUE", "dead-letter-queue", \.names.deadLetterQueue, "Queue that keeps dead-lettered commands."),
        name("EVENTS_EXCHANGE", "events-exchange", \.names.eventsExchange, "Topic exchange replies are published to (customer.created, customer.create_failed)."),
        name("REPLIES_QUEUE", "replies-queue", \.names.repliesQueue, "Bounded queue bound to the events exchange, for inspecting replies."),
        name("REPLIES_BINDING_KEY", "replies-binding-key", \.names.repliesBindingKey, "Binding key of the replies queue."),
    ]

    private static func text(_ variable: String, _ flag: String, _ keyPath: any WritableKeyPath<WorkerConfiguration, String> & Sendable,
                             secret: Bool = false, _ meaning: String, validate: @escaping @Sendable (String) -> String?) -> Setting {
        // A default URL is shown like any other URL: without its password.
        let shown = Redaction.redactingCredentials(in: WorkerConfiguration()[keyPath: keyPath])
        return Setting(variable: variable, flag: flag, defaultValue: shown, meaning: meaning, isSecret: secret, apply: { configuration, raw throws(ConfigurationError) in
            if let problem = validate(raw) { throw .init(variable: variable, flag: flag, value: raw, rule: problem) }
            configuration[keyPath: keyPath] = raw
        }, render: { $0[keyPath: keyPath] })
    }

    /// The database setting: checked as a `DatabaseLocation`; the value is redacted in errors.
    /// `shownInEnvironment`: whether `environmentVariables` carries it (the deprecated name does not).
    private static func database(_ variable: String, _ flag: String, shownInEnvironment: Bool, _ meaning: String) -> Setting {
        Setting(variable: variable, flag: flag, defaultValue: WorkerConfiguration().databaseURL, meaning: meaning, isSecret: true, apply: { configuration, raw throws(ConfigurationError) in
            do throws(DatabaseLocationError) {
                _ = try DatabaseLocation(raw)
            } catch {
                throw .init(variable: variable, flag: flag, value: PostgresURL.redact(raw), rule: error.description)
            }
            configuration.databaseURL = raw
        }, render: { shownInEnvironment ? $0.databaseURL : nil })
    }

    private static func name(_ variable: String, _ flag: String, _ keyPath: any WritableKeyPath<WorkerConfiguration, String> & Sendable,
                             _ meaning: String) -> Setting {
        text(variable, flag, keyPath, meaning) { raw in
            raw.utf8.count <= 255 && !raw.contains(where: \.isWhitespace) ? nil : "must be 1 to 255 characters without spaces"
        }
    }

    private static func integer(_ variable: String, _ flag: String, _ keyPath: any WritableKeyPath<WorkerConfiguration, Int> & Sendable,
                                _ range: ClosedRange<Int>, _ meaning: String) -> Setting {
        parsed(variable, flag, keyPath, meaning,
               rule: "must be a whole number in \(range.lowerBound)...\(range.upperBound)", render: { String($0) }) { Int($0).flatMap { range.contains($0) ? $0 : nil } }
    }

    private static func seconds(_ variable: String, _ flag: String, _ keyPath: any WritableKeyPath<WorkerConfiguration, Duration> & Sendable,
                                _ range: ClosedRange<Int>, _ meaning: String) -> Setting {
        parsed(variable, flag, keyPath, meaning,
                      rule: "must be whole seconds in \(range.lowerBound)...\(range.upperBound)", render: { String($0.components.seconds) }) { Int($0).flatMap { range.contains($0) ? .seconds($0) : nil } }
    }

    private static func milliseconds(_ variable: String, _ flag: String, _ keyPath: any WritableKeyPath<WorkerConfiguration, Duration> & Sendable,
                                     _ range: ClosedRange<Int>, _ meaning: String) -> Setting {
        parsed(variable, flag, keyPath, meaning,
                      rule: "must be whole milliseconds in \(range.lowerBound)...\(range.upperBound)", render: milliseconds(of:)) { Int($0).flatMap { range.contains($0) ? .milliseconds($0) : nil } }
    }

    private static func milliseconds(of duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(seconds * 1000 + attoseconds / 1_000_000_000_000_000)
    }

    /// A setting whose text `parse` turns into its value; nil means the text broke `rule`.
    /// `render` turns the value back into the text (nil: unset). The default shown (help, README)
    /// is the property's own default rendered, `unset` when that is nil: each default is written
    /// once, where the property is declared.
    private static func parsed<Value>(_ variable: String, _ flag: String, _ keyPath: any WritableKeyPath<WorkerConfiguration, Value> & Sendable,
                                      unset: String = "off", _ meaning: String, rule: String,
                                      render: @escaping @Sendable (Value) -> String?,
                                      parse: @escaping @Sendable (String) -> Value?) -> Setting {
        let shown = render(WorkerConfiguration()[keyPath: keyPath]) ?? unset
        return Setting(variable: variable, flag: flag, defaultValue: shown, meaning: meaning, isSecret: false, apply: { configuration, raw throws(ConfigurationError) in
            guard let value = parse(raw) else { throw .init(variable: variable, flag: flag, value: raw, rule: rule) }
            configuration[keyPath: keyPath] = value
        }, render: { render($0[keyPath: keyPath]) })
    }
}
