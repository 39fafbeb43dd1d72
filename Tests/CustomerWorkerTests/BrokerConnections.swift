import BrokerTestSupport
import Foundation

/// What the broker knows of a worker process's connections, and what its log says of them.
enum BrokerConnections {
    /// The broker-side ids of the connections a worker process opened (their client-provided
    /// names carry its pid), as `rabbitmqctl list_connections` on the broker of `port` shows them.
    static func of(workerPID pid: pid_t, port: Int? = nil) async throws -> Set<String> {
        let listing = try await TestBroker.brokerScript(["ctl", "-q", "list_connections", "--no-table-headers", "pid", "client_properties"],
                                                        port: port)
        return Set(listing.split(separator: "\n").compactMap { line -> String? in
            line.contains(" \(pid) consumer\"") || line.contains(" \(pid) publisher\"") ? line.split(separator: "\t").first.map(String.init) : nil
        })
    }

    /// The worker's log, or "" if there is none.
    static func log(_ path: String) -> String {
        (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
    }

    /// Whether the log shows a lost or re-opened connection.
    static func mentionsReconnecting(_ log: String) -> Bool {
        log.contains("reconnecting") || log.contains("connection recovered") || log.contains("connection lost")
    }
}
