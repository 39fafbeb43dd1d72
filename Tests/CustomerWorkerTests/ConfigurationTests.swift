import DatabaseURL
import BrokerTestSupport
import CustomerStore
import CustomerWorker
import Foundation
import Testing

@Suite("Worker configuration", .closesResources)
struct ConfigurationTests {
    @Test func readsEverySettingFromTheEnvironment() throws {
        let configuration = try WorkerConfiguration.fromEnvironment([
            "AMQP_URL": "amqp://u:p@broker:5673/v", "PREFETCH": "64", "SHUTDOWN_TIMEOUT": "3", "BATCH_LINGER_MS": "0",
            "HTTP_PORT": "9090", "LOG_LEVEL": "debug", "LOG_FORMAT": "json", "COMMAND_QUEUE": "q", "DELIVERY_LIMIT": "7",
        ])
        #expect(configuration.amqpURL == "amqp://u:p@broker:5673/v")
        #expect(configuration.prefetch == 64)
        #expect(configuration.shutdownTimeout == .seconds(3))
        #expect(configuration.batchLinger == .zero)
        #expect(configuration.httpPort == 9090)
        #expect(configuration.logLevel == .debug)
        #expect(configuration.logFormat == .json)
        #expect(configuration.names.commandQueue == "q")
        #expect(configuration.deliveryLimit == 7)
        #expect(configuration.databaseURL == "./data/customers.sqlite")
    }

    @Test(arguments: [
        ("PREFETCH", "0"), ("PREFETCH", "many"), ("SHUTDOWN_TIMEOUT", "-1"), ("HTTP_PORT", "70000"),
        ("AMQP_URL", "http://nope"), ("LOG_LEVEL", "loud"), ("LOG_FORMAT", "xml"), ("COMMAND_QUEUE", "has space"),
    ])
    func invalidValuesNameTheVariable(variable: String, value: String) {
        #expect {
            try WorkerConfiguration.fromEnvironment([variable: value])
        } throws: { error in
            "\(error)".contains(variable) && "\(error)".contains(value)
        }
    }

    /// The README's table is the documentation of record: it must list every setting with its default.
    @Test func theReadmeListsEverySettingWithItsDefault() throws {
        let readme = try String(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        for setting in WorkerConfiguration.settings {
            #expect(readme.contains("| `\(setting.variable)` | `--\(setting.flag)` | `\(setting.defaultValue)` |"), "\(setting.variable)")
        }
    }

    @Test func databaseURLPicksTheStore() throws {
        #expect(try DatabaseLocation("./data/customers.sqlite") == .sqlite(path: "./data/customers.sqlite"))
        #expect(try DatabaseLocation("sqlite:/var/lib/customers.sqlite") == .sqlite(path: "/var/lib/customers.sqlite"))
        #expect(try DatabaseLocation("sqlite:///var/lib/customers.sqlite") == .sqlite(path: "/var/lib/customers.sqlite"))
        let postgres = try DatabaseLocation("postgres://worker:p%40ss@db.internal:6432/billing?sslmode=verify-full&pool_size=8&answer_timeout=90")
        guard case .postgres(let url) = postgres else {
            Issue.record("not PostgreSQL: \(postgres)")
            return
        }
        #expect(url.host == "db.internal" && url.port == 6432 && url.database == "billing")
        #expect(url.username == "worker" && url.password == "p@ss")
        #expect(url.sslMode == .verifyFull && url.poolSize == 8)
        #expect(url.answerTimeout == .seconds(90) && url.connectTimeout == .seconds(10))
        #expect(!postgres.redacted.contains("p%40ss") && !postgres.redacted.contains("p@ss"))
        // DATABASE_URL wins over the deprecated DATABASE_PATH.
        let both = try WorkerConfiguration.fromEnvironment(["DATABASE_PATH": "/a.sqlite", "DATABASE_URL": "/b.sqlite"])
        #expect(both.databaseURL == "/b.sqlite")
        #expect(try WorkerConfiguration.fromEnvironment(["DATABASE_PATH": "/a.sqlite"]).databaseURL == "/a.sqlite")
    }

    @Test(arguments: [
        "mysql://root:hunter2@db/customers", "postgres://worker:hunter2@/customers",
        "postgres://worker:hunter2@db/customers?sslmode=sometimes", "postgres://worker:hunter2@db/customers?colour=red",
        "postgres://worker:hunter2@db/customers?answer_timeout=0",
    ])
    func invalidDatabaseURLsAreRefusedWithoutTheirPassword(url: String) {
        #expect {
            try WorkerConfiguration.fromEnvironment(["DATABASE_URL": url])
        } throws: { error in
            "\(error)".contains("DATABASE_URL") && !"\(error)".contains("hunter2")
        }
    }

    /// Liveness tolerates the worst legitimate wait, and follows the settings it derives from.
    @Test func theLivenessWindowCoversTheLongestRetry() throws {
        let defaults = WorkerConfiguration()
        let retryBudget = defaults.databaseBusyTimeout + (defaults.confirmTimeout + defaults.transientBackoff.maximumDelay) * defaults.transientAttempts
        #expect(defaults.livenessWindow > retryBudget)
        let longer = try WorkerConfiguration.fromEnvironment(["CONFIRM_TIMEOUT": "120", "TRANSIENT_ATTEMPTS": "10"])
        #expect(longer.livenessWindow > .seconds(1200))
        #expect(longer.livenessWindow > defaults.livenessWindow)
    }

    @Test func synchronousIsFullUnlessNormalIsChosen() throws {
        #expect(WorkerConfiguration().databaseSynchronous == .full)
        #expect(try WorkerConfiguration.fromEnvironment(["DATABASE_SYNCHRONOUS": "normal"]).databaseSynchronous == .normal)
        #expect(throws: ConfigurationError.self) { try WorkerConfiguration.fromEnvironment(["DATABASE_SYNCHRONOUS": "off"]) }
    }
}
