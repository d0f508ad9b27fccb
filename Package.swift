// swift-tools-version:6.2
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "dynreg",
    platforms: [.macOS(.v14), .iOS(.v17)],
    products: [
        .library(name: "DynRegProtocol", targets: ["DynRegProtocol"]),
        .library(name: "DynRegClient", targets: ["DynRegClient"]),
        .executable(name: "dynreg", targets: ["dynreg"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.0.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.6.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.0", traits: []),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.30.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.0.0"),
        .package(url: "https://github.com/x-sheep/swift-property-based.git", from: "2.0.0"),
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.3.0"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.81.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.29.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.34.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.3.0"),
        .package(url: "https://github.com/apple/swift-atomics.git", from: "1.2.0"),
        .package(url: "https://github.com/swiftlang/swift-subprocess.git", from: "1.0.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.5.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.1.0"),
        .package(url: "https://github.com/apple/swift-system.git", from: "1.4.0"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache.git", from: "2.1.0"),
    ],
    targets: [
        // The wire format: pure, Sendable, swift-crypto only.
        .target(
            name: "DynRegProtocol",
            dependencies: [
                .crypto,
                .cryptoExtras,
            ],
            swiftSettings: swiftSettings
        ),
        // Products, devices, credentials and the audit log, behind a protocol; SQLite implementation.
        .target(
            name: "DynRegStore",
            dependencies: [
                "DynRegProtocol",
                .crypto,
                .coreMetrics,
                .grdb,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        // The same store protocol on PostgreSQL, for several server instances.
        .target(
            name: "DynRegPostgres",
            dependencies: [
                "DynRegProtocol",
                "DynRegStore",
                .postgresNIO,
                .serviceLifecycle,
                .logging,
            ],
            swiftSettings: swiftSettings
        ),
        // Per-product certificate authorities: device certificates, CSRs, revocation, CRLs.
        .target(
            name: "DynRegCA",
            dependencies: [
                "DynRegProtocol",
                .x509,
                .swiftASN1,
                .crypto,
                .cryptoExtras,
            ],
            swiftSettings: swiftSettings
        ),
        // The registration service: device endpoints, activation hook, admin API.
        .target(
            name: "DynRegServer",
            dependencies: [
                "DynRegProtocol",
                "DynRegStore",
                "DynRegCA",
                .coreMetrics,
                .crypto,
                .hummingbird,
                .hummingbirdTLS,
                .prometheus,
                .serviceLifecycle,
                .logging,
                .httpTypes,
                .hummingbirdCore,
                .nioCore,
                .nioSSL,
                .nioHTTPTypes,
                .nioHTTPTypesHTTP1,
                .nioHTTP1,
                .nioPosix,
                .mustache,
            ],
            // Compiled in: the binary needs no resource bundle beside it.
            resources: [
                .embedInCode("Console/Resources/templates"), .embedInCode("Console/Resources/console.css"),
                .embedInCode("Console/Resources/console.js"),
            ],
            swiftSettings: swiftSettings
        ),
        // The device SDK.
        .target(
            name: "DynRegClient",
            dependencies: [
                "DynRegProtocol",
                .asyncHTTPClient,
                .x509,
                .crypto,
                .nioCore,
                .nioHTTP1,
                .nioSSL,
                .swiftASN1,
            ],
            swiftSettings: swiftSettings
        ),
        // Test helpers shared by the test targets: a real server in process.
        .target(
            name: "DynRegTestSupport",
            dependencies: [
                "DynRegCA",
                "DynRegServer",
                "DynRegStore",
                .logging,
                .serviceLifecycle,
                .subprocess,
                .systemPackage,
                .nioCore,
                .nioPosix,
                "DynRegProtocol",
            ],
            swiftSettings: swiftSettings
        ),
        // The known-answer vectors, for every test target that checks them.
        .target(
            name: "DynRegTestVectors",
            resources: [.copy("Resources")],
            swiftSettings: swiftSettings
        ),
        // The load generator behind `dynreg bench`: requests signed by DynRegProtocol, an HTTP/1.1 client on NIO.
        .target(
            name: "DynRegLoad",
            dependencies: [
                "DynRegProtocol",
                .crypto,
                .x509,
                .nioCore,
                .nioPosix,
                .atomics,
                .histogram,
                .swiftASN1,
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "dynreg",
            dependencies: [
                "DynRegProtocol",
                "DynRegStore",
                "DynRegServer",
                "DynRegClient",
                "DynRegPostgres",
                "DynRegLoad",
                .argumentParser,
                .asyncHTTPClient,
                .logging,
                "DynRegCA",
                .histogram,
                .nioCore,
                .nioHTTP1,
                .serviceLifecycle,
                .unixSignals,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DynRegProtocolTests",
            dependencies: [
                "DynRegProtocol",
                "DynRegTestVectors",
                .propertyBased,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DynRegStoreTests",
            dependencies: [
                "DynRegProtocol",
                "DynRegStore",
                "DynRegPostgres",
                "DynRegTestSupport",
                .grdb,
                .postgresNIO,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DynRegServerTests",
            dependencies: [
                "DynRegTestSupport",
                "DynRegProtocol",
                "DynRegCA",
                .x509,
                .swiftASN1,
                "DynRegStore",
                "DynRegServer",
                .asyncHTTPClient,
                .hummingbird,
                .crypto,
                .httpTypes,
                .logging,
                .nioCore,
                .nioHTTP1,
                .nioSSL,
                .serviceLifecycle,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DynRegClientTests",
            dependencies: [
                "DynRegTestSupport",
                "DynRegProtocol",
                "DynRegClient",
                "DynRegStore",
                "DynRegServer",
                "DynRegCA",
                "DynRegPostgres",
                .asyncHTTPClient,
                .hummingbird,
                .crypto,
                .httpTypes,
                .hummingbirdCore,
                .hummingbirdTLS,
                .logging,
                .nioCore,
                .nioPosix,
                .nioSSL,
                .swiftASN1,
                .x509,
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "DynRegLoadTests",
            dependencies: [
                "DynRegLoad",
                "DynRegProtocol",
                .nioCore,
            ],
            swiftSettings: swiftSettings
        ),
        // Tests that need the built `dynreg` binary or a PostgreSQL server (DYNREG_TEST_POSTGRES_URL).
        .testTarget(
            name: "DynRegIntegrationTests",
            dependencies: [
                "dynreg",
                "DynRegCA",
                "DynRegTestSupport",
                "DynRegTestVectors",
                "DynRegProtocol",
                "DynRegStore",
                "DynRegPostgres",
                .postgresNIO,
                .asyncHTTPClient,
                .logging,
                .nioCore,
                .nioHTTP1,
            ],
            swiftSettings: swiftSettings
        ),
    ]
)

// The products of the dependencies, by name.
extension Target.Dependency {
    static let argumentParser: Self = .product(name: "ArgumentParser", package: "swift-argument-parser")
    static let asyncHTTPClient: Self = .product(name: "AsyncHTTPClient", package: "async-http-client")
    static let atomics: Self = .product(name: "Atomics", package: "swift-atomics")
    static let coreMetrics: Self = .product(name: "CoreMetrics", package: "swift-metrics")
    static let crypto: Self = .product(name: "Crypto", package: "swift-crypto")
    static let cryptoExtras: Self = .product(name: "_CryptoExtras", package: "swift-crypto")
    static let grdb: Self = .product(name: "GRDB", package: "GRDB.swift")
    static let histogram: Self = .product(name: "Histogram", package: "hdrhistogram-swift")
    static let httpTypes: Self = .product(name: "HTTPTypes", package: "swift-http-types")
    static let hummingbird: Self = .product(name: "Hummingbird", package: "hummingbird")
    static let hummingbirdCore: Self = .product(name: "HummingbirdCore", package: "hummingbird")
    static let hummingbirdTLS: Self = .product(name: "HummingbirdTLS", package: "hummingbird")
    static let logging: Self = .product(name: "Logging", package: "swift-log")
    static let mustache: Self = .product(name: "Mustache", package: "swift-mustache")
    static let nioCore: Self = .product(name: "NIOCore", package: "swift-nio")
    static let nioHTTP1: Self = .product(name: "NIOHTTP1", package: "swift-nio")
    static let nioPosix: Self = .product(name: "NIOPosix", package: "swift-nio")
    static let nioSSL: Self = .product(name: "NIOSSL", package: "swift-nio-ssl")
    static let nioHTTPTypes: Self = .product(name: "NIOHTTPTypes", package: "swift-nio-extras")
    static let nioHTTPTypesHTTP1: Self = .product(name: "NIOHTTPTypesHTTP1", package: "swift-nio-extras")
    static let postgresNIO: Self = .product(name: "PostgresNIO", package: "postgres-nio")
    static let prometheus: Self = .product(name: "Prometheus", package: "swift-prometheus")
    static let propertyBased: Self = .product(name: "PropertyBased", package: "swift-property-based")
    static let serviceLifecycle: Self = .product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
    static let subprocess: Self = .product(name: "Subprocess", package: "swift-subprocess")
    static let swiftASN1: Self = .product(name: "SwiftASN1", package: "swift-asn1")
    static let systemPackage: Self = .product(name: "SystemPackage", package: "swift-system")
    static let unixSignals: Self = .product(name: "UnixSignals", package: "swift-service-lifecycle")
    static let x509: Self = .product(name: "X509", package: "swift-certificates")
}
