import Foundation
import Logging
import OTel
import ServiceLifecycle
import Synchronization
import Tracing

/// OpenTelemetry tracing through swift-otel, exporting OTLP over HTTP: off unless an endpoint is
/// configured (`OTEL_EXPORTER_OTLP_ENDPOINT` or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), and then
/// configured by the standard `OTEL_*` variables (service name, sampler, batch schedule, headers…).
///
/// Only traces: logs and metrics keep their own systems (swift-log, Prometheus).
public enum TracingBackend {
    /// The variables that turn tracing on; without one of them nothing is bootstrapped.
    public static let endpointVariables = ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"]

    private static let started = Mutex(false)

    /// Whether `environment` names an OTLP endpoint (tracing may still be turned off by
    /// `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`).
    public static func isConfigured(_ environment: [String: String]) -> Bool {
        endpointVariables.contains { !(environment[$0] ?? "").isEmpty }
    }

    /// True once `bootstrap` has installed the tracer (for this process).
    public static var isEnabled: Bool { started.withLock { $0 } }

    /// Installs the OTLP tracer when the environment configures one, and returns the service that
    /// exports its spans (run it in the ServiceGroup, first, so it shuts down last and flushes what
    /// the others ended). Nil when tracing stays off. A process installs one tracer at most.
    public static func bootstrap(serviceName: String, logger: Logger,
                                 environment: [String: String] = ProcessInfo.processInfo.environment) throws(TracingConfigurationError) -> (any Service)? {
        guard var environment = try enabledEnvironment(environment) else { return nil }
        // swift-otel reads OTEL_SDK_DISABLED for every signal: "false" would turn its logs and
        // metrics back on (a second bootstrap of those systems). Tracing is on here already.
        environment["OTEL_SDK_DISABLED"] = nil
        var configuration = OTel.Configuration.default
        configuration.serviceName = serviceName  // OTEL_SERVICE_NAME still wins
        configuration.logs.enabled = false
        configuration.metrics.enabled = false
        configuration.traces.exporter = .otlp
        configuration.traces.otlpExporter.protocol = .httpProtobuf  // OTEL_EXPORTER_OTLP_PROTOCOL=http/json still wins
        // Its own diagnostics through our logger (JSON lines stay JSON), warnings and worse only.
        configuration.diagnosticLogger = .custom(logger)
        configuration.diagnosticLogLevel = .warning
        return try started.withLock { started throws(TracingConfigurationError) -> (any Service)? in
            guard !started else { return nil }
            let service: any Service
            do {
                service = try OTel.bootstrap(configuration: configuration, environment: environment)
            } catch {
                throw TracingConfigurationError(variable: "OTEL_*", value: "", rule: "swift-otel refused the configuration: \(error)")
            }
            started = true
            return service
        }
    }

    /// The log metadata of the span in scope: `trace_id`, `span_id`, `trace_flags` (nothing when none is).
    public static func loggingMetadataProvider() -> Logger.MetadataProvider {
        OTel.makeLoggingMetadataProvider()
    }

    /// The environment to configure swift-otel with, or nil when tracing is off. Values swift-otel
    /// 1.6.0 would stop the process on (it has only OTLP over HTTP here) are refused with the
    /// variable named.
    public static func enabledEnvironment(_ environment: [String: String]) throws(TracingConfigurationError) -> [String: String]? {
        guard isConfigured(environment) else { return nil }
        if let disabled = environment["OTEL_SDK_DISABLED"], !disabled.isEmpty {
            switch disabled.lowercased() {
            case "true": return nil
            case "false": break
            default: throw TracingConfigurationError(variable: "OTEL_SDK_DISABLED", value: disabled, rule: "must be true or false")
            }
        }
        if let exporter = environment["OTEL_TRACES_EXPORTER"], !exporter.isEmpty {
            switch exporter.lowercased() {
            case "none": return nil
            case "otlp": break
            default: throw TracingConfigurationError(variable: "OTEL_TRACES_EXPORTER", value: exporter, rule: "must be otlp or none")
            }
        }
        for (variable, value) in environment where !value.isEmpty {
            if let rule = problem(variable, value) { throw TracingConfigurationError(variable: variable, value: value, rule: rule) }
        }
        return environment
    }
}

extension TracingBackend {
    /// The samplers of the OpenTelemetry specification that swift-otel 1.6.0 has.
    public static let samplers = ["always_on", "always_off", "traceidratio", "parentbased_always_on", "parentbased_always_off",
                                  "parentbased_traceidratio"]

    /// What is wrong with `value` for the tracing variable `variable`, or nil when it is usable
    /// (also nil for variables this check does not know). Values swift-otel 1.6.0 would stop the
    /// process on (it has only OTLP over HTTP here) are refused.
    public static func problem(_ variable: String, _ value: String) -> String? {
        switch variable {
        case "OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL":
            return ["http/protobuf", "http/json"].contains(value) ? nil : "must be http/protobuf or http/json (this build exports OTLP over HTTP only)"
        case "OTEL_PROPAGATORS":
            let unsupported = value.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
                .filter { !["tracecontext", "none"].contains($0) }
            return unsupported.isEmpty ? nil : "must list only tracecontext (W3C) or none; not supported here: \(unsupported.joined(separator: ", "))"
        case "OTEL_TRACES_SAMPLER":
            return samplers.contains(value) ? nil : "must be one of \(samplers.joined(separator: ", "))"
        case "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT":
            guard let url = URL(string: value), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
                return "must be an http:// or https:// URL"
            }
            return nil
        default:
            return nil
        }
    }
}

/// A tracing variable with a value the worker cannot use; names the variable and the rule.
public struct TracingConfigurationError: Error, Sendable, CustomStringConvertible {
    public let variable: String
    public let value: String
    public let rule: String

    public var description: String { "invalid \(variable) '\(value)': \(rule)" }
}
