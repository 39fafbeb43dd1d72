import DatabaseURL
import BrokerTestSupport
import Foundation
import Logging
import PostgresNIO
@testable import PostgresStore
import Testing

/// `sslmode` as libpq means it, against a real PostgreSQL server that accepts TLS with a
/// certificate for `localhost` from a throwaway CA (`PG_TLS=1 scripts/postgres.sh start`, which
/// scripts/test.sh runs on `PG_TLS_PORT`, default the main server's port + 100).
@Suite("PostgreSQL TLS", .closesResources, .enabled(if: TLSServer.enabled, "no TLS server: see scripts/test.sh (PG_TLS=1 scripts/postgres.sh start)"))
struct PostgresTLSTests {
    static let environment = TLSServer.environment

    /// The TLS server's URL with `host`, `sslmode` and `sslrootcert` (a file in the server's TLS folder).
    static func url(host: String = "127.0.0.1", _ mode: String, rootCertificate: String? = nil) throws -> String {
        let server = try #require(environment["POSTGRES_TLS_URL"], "POSTGRES_TLS_URL")
        var components = try #require(URLComponents(string: server))
        components.host = host
        var query = [URLQueryItem(name: "sslmode", value: mode), URLQueryItem(name: "connect_timeout", value: "10")]
        if let rootCertificate {
            let folder = try #require(environment["POSTGRES_TLS_DIR"], "POSTGRES_TLS_DIR")
            query.append(URLQueryItem(name: "sslrootcert", value: "\(folder)/\(rootCertificate)"))
        }
        components.queryItems = query
        return try #require(components.string)
    }

    /// Connects once with the URL's settings (closed on every path) and asks the server whether
    /// this connection is encrypted.
    static func connect(_ url: String) async throws -> Bool {
        let logger = Logger(label: "test.postgres-tls")
        let connection = try await PostgresConnection.connect(configuration: try PostgresURL(url).connectionConfiguration, id: 1, logger: logger)
        do {
            let rows = try await connection.query("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()", logger: logger)
            var encrypted = false
            for try await value in rows.decode(Bool.self) { encrypted = value }
            try await connection.close()
            return encrypted
        } catch {
            try? await connection.close()
            throw error
        }
    }

    static func refused(_ url: String) async -> Bool {
        do {
            _ = try await connect(url)
            return false
        } catch {
            return true
        }
    }

    @Test func requireEncryptsWithoutCheckingTheCertificate() async throws {
        #expect(try await Self.connect(try Self.url("require")))
        #expect(try await Self.connect(try Self.url("prefer")), "prefer uses TLS when the server has it")
        #expect(try await Self.connect(try Self.url("disable")) == false)
    }

    /// libpq: "if a root CA file exists, the behavior of sslmode=require will be the same as that
    /// of verify-ca".
    @Test func requireWithARootCertificateVerifiesTheChain() async throws {
        #expect(try await Self.connect(try Self.url("require", rootCertificate: "ca.pem")))
        #expect(await Self.refused(try Self.url("require", rootCertificate: "other-ca.pem")), "a wrong CA must be refused")
        #expect(await Self.refused(try Self.url("prefer", rootCertificate: "other-ca.pem")), "prefer verifies too, with a root certificate")
    }

    @Test func verifyCAChecksTheChainButNotTheHostName() async throws {
        #expect(try await Self.connect(try Self.url(host: "127.0.0.1", "verify-ca", rootCertificate: "ca.pem")),
                "the certificate names localhost only; verify-ca does not look")
        #expect(await Self.refused(try Self.url("verify-ca", rootCertificate: "other-ca.pem")))
        #expect(await Self.refused(try Self.url("verify-ca")), "a throwaway CA is not among the system's roots")
    }

    @Test func verifyFullChecksTheChainAndTheHostName() async throws {
        #expect(try await Self.connect(try Self.url(host: "localhost", "verify-full", rootCertificate: "ca.pem")))
        #expect(await Self.refused(try Self.url(host: "127.0.0.1", "verify-full", rootCertificate: "ca.pem")),
                "the certificate is for localhost, not 127.0.0.1: a wrong host name must be refused")
        #expect(await Self.refused(try Self.url(host: "localhost", "verify-full", rootCertificate: "other-ca.pem")))
    }

    @Test func theCertificateCheckFollowsLibpq() throws {
        let folder = try #require(Self.environment["POSTGRES_TLS_DIR"])
        let base = "postgres://u@db.example/d"
        let cases: [(String, PostgresURL.CertificateCheck?)] = [
            ("?sslmode=disable", nil), ("", PostgresURL.CertificateCheck.none), ("?sslmode=require", PostgresURL.CertificateCheck.none),
            ("?sslmode=require&sslrootcert=\(folder)/ca.pem", .chain), ("?sslmode=prefer&sslrootcert=\(folder)/ca.pem", .chain),
            ("?sslmode=verify-ca", .chain), ("?sslmode=verify-full", .chainAndHostName),
            ("?sslmode=verify-full&sslrootcert=system", .chainAndHostName),
        ]
        for (query, check) in cases {
            #expect(try PostgresURL(base + query).certificateCheck == check, "\(query)")
        }
        #expect(throws: PostgresURL.Invalid.self) { try PostgresURL(base + "?sslmode=require&sslrootcert=system") }
        #expect(throws: PostgresURL.Invalid.self) { try PostgresURL(base + "?sslmode=verify-ca&sslrootcert=/nonexistent/ca.pem") }
    }
}

/// The TLS server scripts/test.sh starts; required under CI.
enum TLSServer {
    static let environment = ProcessInfo.processInfo.environment
    static var enabled: Bool { environment["POSTGRES_TLS_URL"] != nil || TestBroker.isCI }
}
