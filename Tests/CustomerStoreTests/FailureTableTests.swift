import CreateCustomer
import CustomerDomain
import CustomerStore
@testable import PostgresStore
import BrokerTestSupport
import PostgresNIO
import Testing
import _ConnectionPoolModule

/// Every row of each adapter's failure table, and what falls outside them.
private struct OwnFault: CommandFault {}

@Suite("Store failure tables", .closesResources)
struct FailureTableTests {
    static let sqliteCases: [(code: Int32, kind: StoreFailureClass)] = [
        (5, .unavailable), (517, .unavailable) /* SQLITE_BUSY_SNAPSHOT */, (6, .unavailable), (7, .unavailable),
        (8, .unavailable), (9, .unavailable), (10, .unavailable), (266, .unavailable) /* SQLITE_IOERR_READ */,
        (11, .unavailable), (13, .unavailable), (14, .unavailable), (15, .unavailable), (26, .unavailable),
        (18, .command), (19, .command), (2067, .command) /* SQLITE_CONSTRAINT_UNIQUE */, (20, .command), (25, .command),
        (1, .unknown), (4, .unknown) /* SQLITE_ABORT: in no row */,
    ]

    @Test(arguments: sqliteCases.map { [String($0.code), $0.kind.rawValue] })
    func sqliteCode(_ row: [String]) {
        let error = CustomerStoreError.database(operation: "x", path: "p", code: Int32(row[0])!, message: "m")
        let failure = CustomerStore.classify(error)
        #expect(failure.kind.rawValue == row[1])
        #expect(failure.code.contains("(\(row[0]))"), "the code is named: \(failure.code)")
    }

    @Test func sqliteTableRowsAreAllTested() {
        let tested = Set(Self.sqliteCases.map { $0.code & 0xFF })
        #expect(Set(CustomerStore.failureTable.keys).isSubset(of: tested))
    }

    @Test func sqliteOtherErrors() {
        #expect(CustomerStore.classify(CustomerStoreError.cannotCreateDirectory(path: "p", reason: "r")).kind == .unavailable)
        #expect(CustomerStore.classify(CustomerStoreError.unexpected(operation: "x", description: "d")).kind == .unknown)
        #expect(CustomerStore.classify(OwnFault()).kind == .command, "e.g. a stored plan no import accepts (PlanOutOfRange)")
    }

    static let postgresCases: [(sqlState: String, kind: StoreFailureClass)] = [
        ("40P01", .conflict), ("40001", .conflict),
        ("08006", .unavailable), ("08001", .unavailable), ("53100", .unavailable), ("53300", .unavailable),
        ("58030", .unavailable), ("57P01", .unavailable), ("57P02", .unavailable), ("57P03", .unavailable),
        ("57014", .unavailable), ("55P03", .unavailable), ("55006", .unavailable), ("25006", .unavailable),
        ("42501", .unavailable), ("42P01", .unavailable), ("42703", .unavailable), ("3D000", .unavailable),
        ("28P01", .unavailable),
        ("23505", .command), ("23503", .command), ("22003", .command), ("22P02", .command),
        ("XX000", .unknown), ("42601", .unknown) /* syntax error: in no row */, ("25P02", .unknown),
    ]

    @Test(arguments: postgresCases.map { [$0.sqlState, $0.kind.rawValue] })
    func postgresSQLState(_ row: [String]) {
        let error = PostgresStoreError.server(operation: "x", location: "l", sqlState: row[0], message: "m")
        let failure = PostgresStore.classify(error)
        #expect(failure.kind.rawValue == row[1])
        #expect(failure.code == "SQLSTATE \(row[0])")
    }

    @Test func postgresTableRowsAreAllTested() {
        let tested = Self.postgresCases.map(\.sqlState)
        for row in PostgresStoreError.failureTable {
            #expect(tested.contains { $0 == row.sqlState || (row.sqlState.count == 2 && $0.hasPrefix(row.sqlState)) }, "\(row.sqlState)")
        }
    }

    @Test func postgresOtherErrors() {
        #expect(PostgresStore.classify(PostgresStoreError.connection(operation: "x", location: "l", reason: "refused")).kind == .unavailable)
        #expect(PostgresStore.classify(PostgresStoreError.unexpected(operation: "x", location: "l", description: "d")).kind == .unknown)
        #expect(PostgresStore.classify(OwnFault()).kind == .command)
    }

    /// "Cannot reach the server" in every form postgres-nio gives it is an outage, never
    /// unclassified: its pool's circuit breaker (open after a minute of failed connects), its
    /// shutdown, and the socket's own errors.
    @Test(arguments: [ConnectionPoolError.connectionCreationCircuitBreakerTripped, .poolShutdown, .requestCancelled])
    func postgresPoolErrorsAreOutages(_ error: ConnectionPoolError) {
        let wrapped = PostgresStoreError.wrapping(error, operation: "handle commands", location: "postgres://u:***@h/db")
        #expect(PostgresStore.classify(wrapped) == StoreFailure(.unavailable, code: "connection"))
        #expect(PostgresStore.classify(error) == StoreFailure(.unavailable, code: "connection"), "also unwrapped")
        #expect(PostgresStore.meansUnreachable(wrapped), "the next transaction checks whether the server is back")
    }

    @Test func postgresSocketErrorsAreOutages() {
        for error: any Error in [ChannelError.ioOnClosedChannel, ChannelError.connectTimeout(.seconds(10)), IOError(errnoCode: ECONNREFUSED, reason: "connect")] {
            #expect(PostgresStore.classify(error).kind == .unavailable, "\(error)")
        }
    }

    @Test func onlyConnectionLossesMeanTheServerIsUnreachable() {
        #expect(PostgresStore.meansUnreachable(PostgresStoreError.server(operation: "x", location: "l", sqlState: "57P01", message: "m")))
        #expect(PostgresStore.meansUnreachable(PostgresStoreError.server(operation: "x", location: "l", sqlState: "08006", message: "m")))
        #expect(!PostgresStore.meansUnreachable(PostgresStoreError.server(operation: "x", location: "l", sqlState: "42501", message: "m")),
                "a revoked privilege: the server answers")
        #expect(!PostgresStore.meansUnreachable(PostgresStoreError.server(operation: "x", location: "l", sqlState: "40P01", message: "m")))
    }
}
