// swift-tools-version: 6.2
import PackageDescription

/// Settings every first-party target shares: Swift 6 mode is the default for this tools version;
/// warnings are errors so the tree stays at zero warnings.
let strict: [SwiftSetting] = [
    .treatAllWarnings(as: .error),
    .enableUpcomingFeature("ExistentialAny"),
]

let package = Package(
    name: "customer-worker",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "customer-worker", targets: ["customer-worker"]),
        .executable(name: "customer-worker-bench", targets: ["customer-worker-bench"]),
        .executable(name: "customer-worker-relay", targets: ["customer-worker-relay"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        // No traits: the swift-configuration support and URL-encoded forms are not used.
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        // OTLP over HTTP only: the gRPC exporter would add its whole stack to the build for nothing.
        .package(url: "https://github.com/swift-otel/swift-otel", from: "1.6.0", traits: ["OTLPHTTP"]),
    ],
    targets: [
        // rabbitmq-c (Debian: librabbitmq-dev) and a header shim for the calls Swift cannot import.
        .systemLibrary(
            name: "CRabbitMQ",
            pkgConfig: "librabbitmq",
            providers: [.apt(["librabbitmq-dev"]), .brew(["rabbitmq-c"])]
        ),
        // AMQP 0-9-1 client over rabbitmq-c: connections confined to their own threads.
        .target(
            name: "AMQP",
            dependencies: [
                "CRabbitMQ",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Child processes that die with their parent (tests' workers, the benchmark's workers).
        .target(name: "CChildProcess"),
        .target(name: "ChildProcess", dependencies: ["CChildProcess"], swiftSettings: strict),
        // The create-customer contract and its rules: pure values, no I/O.
        .target(
            name: "CustomerDomain",
            dependencies: [
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // The create-customer use case and the admin rules, against a batch-wise storage protocol; no SQL.
        .target(
            name: "CreateCustomer",
            dependencies: [
                "CustomerDomain",
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // The SQLite adapter (GRDB): migrations and the storage protocol's statements; no rules.
        .target(
            name: "CustomerStore",
            dependencies: [
                "CreateCustomer",
                "CustomerDomain",
                .product(name: "GRDB", package: "GRDB.swift"),
                // SQLite's C API, for the statements stepped directly (`DirectStatement`).
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict
        ),
        // DATABASE_URL parsed and checked (a SQLite path, or a PostgreSQL URL and its options),
        // without a driver: the settings use it, the stores open what it names. Pure: no I/O but
        // checking that a named CA file is readable.
        .target(name: "DatabaseURL", swiftSettings: strict),
        // The PostgreSQL adapter (postgres-nio): the store for replicas on several hosts; no rules.
        .target(
            name: "PostgresStore",
            dependencies: [
                "CreateCustomer",
                "CustomerDomain",
                "DatabaseURL",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                // Only for `ConnectionPoolError` (the pool's circuit breaker, its shutdown), which
                // postgres-nio throws as it is: the store must recognise it as an outage.
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // Operational surface: Prometheus metrics, JSON logs, the HTTP health and metrics listener.
        .target(
            name: "Observability",
            dependencies: [
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // OpenTelemetry: the command spans (messaging conventions), trace context in AMQP headers,
        // and the OTLP/HTTP exporter, off unless configured.
        .target(
            name: "WorkerTracing",
            dependencies: [
                "AMQP",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "OTel", package: "swift-otel"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The worker service: topology, batches, replies, acks, against the storage protocol. It
        // opens no store and links no driver: a DATABASE_URL setting is checked by `DatabaseURL`.
        .target(
            name: "CustomerWorker",
            dependencies: [
                "AMQP",
                "WorkerTracing",
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                "CreateCustomer",
                "CustomerDomain",
                "DatabaseURL",
                "Observability",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The composition root the executables share (and the tests, which run what `customer-worker
        // run` runs): which concrete store a DATABASE_URL opens, and the application's services.
        .target(
            name: "WorkerComposition",
            dependencies: [
                "DatabaseURL",
                "CustomerWorker",
                "AMQP",
                "CreateCustomer",
                "CustomerStore",
                "PostgresStore",
                "Observability",
                "WorkerTracing",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        // The benchmark's ceiling: a no-op relay written directly on rabbitmq-c, so that it costs
        // the broker's limit rather than its own.
        .target(
            name: "CBenchRelay",
            dependencies: ["CRabbitMQ"],
            linkerSettings: [.linkedLibrary("rabbitmq")]
        ),
        // The ceiling as a process of its own, which the benchmark starts and stops (as an outside
        // harness runs it, so it shares nothing with the process that times the commands).
        .executableTarget(
            name: "customer-worker-relay",
            dependencies: ["CBenchRelay"]
        ),
        // `customer-worker-bench`: the broker's ceiling against real worker processes.
        .target(
            name: "WorkerBenchmark",
            dependencies: [
                "DatabaseURL",
                "AMQP",
                "WorkerTracing",
                "ChildProcess",
                "CustomerWorker",
                "WorkerComposition",
                "CreateCustomer",
                "CustomerStore",
                "CustomerDomain",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Thin @main: argument parsing only.
        .executableTarget(
            name: "customer-worker",
            dependencies: [
                "DatabaseURL",
                "CustomerWorker",
                "WorkerComposition",
                "WorkerTracing",
                "CreateCustomer",
                "CustomerDomain",
                "CustomerStore",
                "PostgresStore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict
        ),
        // The benchmark's own executable, so the worker's binary and image carry no relay or histogram.
        .executableTarget(
            name: "customer-worker-bench",
            dependencies: [
                "DatabaseURL",
                "CustomerWorker",
                "Observability",
                "WorkerBenchmark",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        // Helpers for tests that talk to the private broker started by scripts/broker.sh, and the
        // fault injection only tests link.
        .target(
            name: "BrokerTestSupport",
            dependencies: [
                "DatabaseURL",
                "AMQP", "ChildProcess", "PostgresStore", "CreateCustomer", "CustomerDomain",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ],
            path: "Tests/BrokerTestSupport",
            swiftSettings: strict
        ),
        // `customer-worker run` with fault injection (a crash on a named command), for the poison
        // tests: the worker's own binary links no fault.
        .executableTarget(
            name: "customer-worker-faults",
            dependencies: ["CustomerWorker", "WorkerComposition", "BrokerTestSupport", .product(name: "Logging", package: "swift-log")],
            path: "Tests/FaultInjectingWorker",
            swiftSettings: strict
        ),
        .testTarget(name: "AMQPTests", dependencies: ["AMQP", "BrokerTestSupport"], swiftSettings: strict),
        .testTarget(name: "WorkerBenchmarkTests", dependencies: ["WorkerBenchmark"], swiftSettings: strict),
        .testTarget(
            name: "CustomerDomainTests",
            dependencies: [
                "CustomerDomain", .product(name: "PropertyBased", package: "swift-property-based"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: strict),
        .testTarget(name: "WorkerTracingTests", dependencies: ["WorkerTracing", "AMQP"], swiftSettings: strict),
        .testTarget(
            name: "CreateCustomerTests",
            dependencies: ["CreateCustomer", "CustomerDomain", .product(name: "PropertyBased", package: "swift-property-based")],
            swiftSettings: strict),
        .testTarget(
            name: "CustomerStoreTests",
            dependencies: [
                "CreateCustomer", "CustomerStore", "PostgresStore", "DatabaseURL", "BrokerTestSupport",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "_ConnectionPoolModule", package: "postgres-nio"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "ObservabilityTests",
            dependencies: [
                "Observability",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "CustomerWorkerTests",
            dependencies: [
                "CustomerWorker", "WorkerComposition", "CreateCustomer", "CustomerStore", "PostgresStore", "DatabaseURL", "AMQP", "BrokerTestSupport", "CRabbitMQ",
                .product(name: "GRDB", package: "GRDB.swift"),
            ],
            swiftSettings: strict
        ),
    ]
)
