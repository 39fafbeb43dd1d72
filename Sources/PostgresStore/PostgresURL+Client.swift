import DatabaseURL
import Foundation
import PostgresNIO
import _ConnectionPoolModule

/// The PostgreSQL URL (parsed in `DatabaseURL`, which needs no driver) as postgres-nio's
/// configurations.
extension PostgresURL {
    /// TLS as `sslmode` and `sslrootcert` say; nil for `disable`.
    private var tlsConfiguration: TLSConfiguration? {
        guard sslMode != .disable else { return nil }
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        guard let check = certificateCheck else { return nil }
        if let sslRootCertificate, sslRootCertificate != "system" { tls.trustRoots = .file(sslRootCertificate) }
        switch check {
        case .none: tls.certificateVerification = .none
        case .chain: tls.certificateVerification = .noHostnameVerification
        case .chainAndHostName: tls.certificateVerification = .fullVerification
        }
        return tls
    }

    var clientConfiguration: PostgresClient.Configuration {
        var configuration = PostgresClient.Configuration(
            host: host, port: port, username: username, password: password, database: database, tls: .disable)
        if let tls = tlsConfiguration {
            configuration.tls = sslMode == .prefer ? .prefer(tls) : .require(tls)
        }
        configuration.options.maximumConnections = poolSize
        configuration.options.minimumConnections = 0
        configuration.options.connectTimeout = connectTimeout
        return configuration
    }

    /// The same settings for one connection outside the pool (to learn why the pool cannot connect).
    var connectionConfiguration: PostgresConnection.Configuration {
        get throws {
            var tls = PostgresConnection.Configuration.TLS.disable
            if let configuration = tlsConfiguration {
                let context = try NIOSSLContext(configuration: configuration)
                tls = sslMode == .prefer ? .prefer(context) : .require(context)
            }
            var configuration = PostgresConnection.Configuration(
                host: host, port: port, username: username, password: password, database: database, tls: tls)
            let (seconds, attoseconds) = connectTimeout.components
            configuration.options.connectTimeout = .nanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
            return configuration
        }
    }
}
