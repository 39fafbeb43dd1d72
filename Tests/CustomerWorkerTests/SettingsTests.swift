import BrokerTestSupport
import CustomerWorker
import Foundation
import Testing

/// Each setting is declared once (a row of `WorkerConfiguration.settings`); the README, the
/// executable's flags and their help, and `environmentVariables` must all follow that row.
@Suite("Settings defined once", .closesResources)
struct SettingsTests {
    @Test func theReadmeTableIsTheGeneratedOne() throws {
        let readme = try String(contentsOf: TestBroker.repositoryRoot.appendingPathComponent("README.md"), encoding: .utf8)
        let table = WorkerConfiguration.markdownTable
        #expect(readme.contains(table + "\n"), "README.md's settings table differs from WorkerConfiguration.settings; it should read:\n\(table)")
    }

    /// The options `customer-worker run` declares, by long name, with their help (from
    /// ArgumentParser's own description of the executable).
    private func runOptions() async throws -> [String: String] {
        let result = try await TestBroker.runCapturing(WorkerProcess.executable, ["run", "--experimental-dump-help"], errorsToOutput: false)
        #expect(result.status == 0)
        let root = try #require(try JSONSerialization.jsonObject(with: Data(result.output.utf8)) as? [String: Any])
        var commands = [try #require(root["command"] as? [String: Any])]
        var run: [String: Any]?
        while let command = commands.popLast() {
            if command["commandName"] as? String == "run" { run = command; break }
            commands += command["subcommands"] as? [[String: Any]] ?? []
        }
        var options: [String: String] = [:]
        for argument in try #require(run)["arguments"] as? [[String: Any]] ?? [] {
            guard argument["kind"] as? String == "option" else { continue }
            for name in argument["names"] as? [[String: Any]] ?? [] where name["kind"] as? String == "long" {
                options[name["name"] as? String ?? ""] = argument["abstract"] as? String ?? ""
            }
        }
        return options
    }

    @Test func theExecutablesFlagsAreTheTablesWithItsHelp() async throws {
        let options = try await runOptions()
        #expect(Set(options.keys) == Set(WorkerConfiguration.settings.map(\.flag)))
        for setting in WorkerConfiguration.settings {
            #expect(options[setting.flag] == setting.help, "--\(setting.flag)")
        }
    }

    /// A value each setting refuses, to see which variable the error names.
    private func invalidValue(_ variable: String) -> String {
        switch variable {
        case "AMQP_URL": "http://nope"
        case "DATABASE_URL", "DATABASE_PATH": "mysql://root@db/customers"
        case "REPLY_TO_PATTERN": "(unclosed"
        case "OTEL_SERVICE_NAME": String(repeating: "x", count: 256)
        default: "has space"
        }
    }

    /// No map ties a flag to its variable: each flag must reach its own setting.
    @Test func everyFlagReachesItsSetting() async throws {
        for setting in WorkerConfiguration.settings {
            let value = invalidValue(setting.variable)
            let result = try await TestBroker.runCapturing(WorkerProcess.executable, ["run", "--\(setting.flag)", value],
                                                           environment: ["DATABASE_URL": "", "AMQP_URL": ""])
            #expect(result.status == 64, "--\(setting.flag): \(result.output)")
            #expect(result.output.contains("invalid \(setting.variable) (--\(setting.flag))"), "--\(setting.flag): \(result.output)")
        }
    }

    @Test func environmentVariablesRoundTrip() throws {
        var configuration = WorkerConfiguration()
        configuration.prefetch = 17
        configuration.httpPort = 9091
        configuration.shutdownTimeout = .seconds(4)
        configuration.batchLinger = .milliseconds(7)
        configuration.logFormat = .json
        configuration.replyTo = try ReplyToPolicy(pattern: "answers\\..*")
        configuration.names = TopologyNames(prefix: "round.trip")
        let environment = configuration.environmentVariables
        #expect(environment["DATABASE_PATH"] == nil, "the deprecated name is not written")
        let read = try WorkerConfiguration.fromEnvironment(environment)
        #expect(read.environmentVariables == environment)
        #expect(read.prefetch == 17 && read.httpPort == 9091 && read.shutdownTimeout == .seconds(4) && read.batchLinger == .milliseconds(7))
        #expect(read.names == configuration.names && read.replyTo.pattern == "answers\\..*" && read.logFormat == .json)
        #expect(WorkerConfiguration().environmentVariables["HTTP_PORT"] == nil, "off is no value")
    }

    @Test func secretsAreMarked() {
        let secrets = Set(WorkerConfiguration.settings.filter(\.isSecret).map(\.variable))
        #expect(secrets == ["AMQP_URL", "DATABASE_URL", "DATABASE_PATH"])
        for setting in WorkerConfiguration.settings where setting.isSecret {
            #expect(!setting.help.contains("guest:guest"))
            #expect(setting.help.contains("Secret"))
        }
    }
}
