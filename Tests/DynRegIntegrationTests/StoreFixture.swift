import DynRegPostgres
import DynRegStore
import DynRegTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

/// The stores every conformance test runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite
    case postgres

    var testDescription: String { self == .sqlite ? "SQLite" : "PostgreSQL" }
}

/// Opens a fresh, empty store of `kind` for one test and closes it afterwards.
func withStore(
    _ kind: StoreKind, product: Product? = nil, _ body: (any RegistrationStore) async throws -> Void
) async throws {
    // With a product, the store holds it before `body` runs.
    func run(_ store: any RegistrationStore) async throws {
        if let product { _ = try await store.createProduct(product) }
        try await body(store)
    }
    switch kind {
    case .sqlite:
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("dynreg-store-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteStore(
            path: directory.appendingPathComponent("dynreg.sqlite").path, masterKey: LiveServer.masterKey)
        try await withRunning(store) { try await run(store) }
    case .postgres:
        try await PostgresTestDatabase.withRunningStore { store, _ in try await run(store) }
    }
}

/// The PostgreSQL server named by `DYNREG_TEST_POSTGRES_URL`, where each test gets a database of its own.
enum PostgresTestDatabase {
    /// A running store on a fresh database, with the configuration it uses for the test's own admin queries.
    static func withRunningStore(
        _ body: (PostgresStore, PostgresStore.Configuration) async throws -> Void
    ) async throws {
        try await withFreshDatabase { configuration in
            var configuration = configuration
            // These tests check behaviour, not outages: a machine loaded by a parallel build once took over the
            // production default of 5 s to hand out a connection.
            configuration.leaseTimeout = .seconds(30)
            let store = PostgresStore(configuration: configuration, masterKey: LiveServer.masterKey, logger: logger)
            try await withRunning(store) { try await body(store, configuration) }
        }
    }

    /// The URL of `configuration`'s database on the test server, for a `dynreg` process or `pg_dump`.
    static func url(of configuration: PostgresStore.Configuration) throws -> String {
        let base = try #require(url)
        var components = try #require(URLComponents(string: base))
        components.path = "/" + configuration.database
        return try #require(components.string)
    }

    static let environment = ProcessInfo.processInfo.environment
    static let url = environment["DYNREG_TEST_POSTGRES_URL"].flatMap { $0.isEmpty ? nil : $0 }
    static let isCI = environment["CI"].map { !$0.isEmpty } ?? false

    static let logger: Logger = {
        var logger = Logger(label: "dynreg.tests")
        logger.logLevel = .warning
        return logger
    }()

    private static let missing =
        "DYNREG_TEST_POSTGRES_URL is not set (postgres://user:password@127.0.0.1:5432/postgres, a role that may "
        + "CREATE DATABASE); .ci/run starts a throwaway PostgreSQL and sets it"

    /// The admin connection's settings, or `nil` after skipping the test (visibly) where no URL is set.
    /// Under CI a missing URL is a failure.
    static func adminConfiguration() throws -> PostgresStore.Configuration? {
        guard let url else {
            if isCI { throw PostgresRequired() }
            _ = printSkipNote
            #if compiler(>=6.3)
            try Test.cancel("\(missing)")
            #else
            return nil
            #endif
        }
        var configuration = try PostgresStore.Configuration(url: url)
        // Tests run in parallel, each with its own pool: stay well inside max_connections.
        configuration.maximumConnections = 8
        // A loopback connect took over 10 s while the two-instance test kept this process's event loops busy.
        configuration.connectTimeout = .seconds(60)
        return configuration
    }

    /// Printed once per run; each skipped test also reports itself cancelled.
    private static let printSkipNote: Void = print("note: skipping the PostgreSQL tests: \(missing)")

    struct AdminQueryFailed: Error, CustomStringConvertible {
        var query: String
        var reason: String
        var description: String { "\(query): \(reason)" }
    }

    struct PostgresRequired: Error, CustomStringConvertible {
        var description: String { "PostgreSQL is required when CI is set: \(missing)" }
    }

    /// Creates an empty database with a random name, hands its configuration to `body`, then drops it.
    static func withFreshDatabase(_ body: (PostgresStore.Configuration) async throws -> Void) async throws {
        guard let admin = try adminConfiguration() else { return }
        // Only [a-z0-9_]: the name is spliced into DDL, which takes no parameters.
        let name = "dynreg_test_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        try await adminQuery(admin, "CREATE DATABASE \(unescaped: name)")
        var configuration = admin
        configuration.database = name
        do {
            try await body(configuration)
        } catch {
            try? await adminQuery(admin, "DROP DATABASE \(unescaped: name) WITH (FORCE)")
            throw error
        }
        try await adminQuery(admin, "DROP DATABASE \(unescaped: name) WITH (FORCE)")
    }

    static func adminQuery(_ configuration: PostgresStore.Configuration, _ query: PostgresQuery) async throws {
        let connection = try await PostgresConnection.connect(
            configuration: try configuration.connectionConfiguration(), id: 1, logger: logger)
        do {
            try await connection.query(query, logger: logger)
        } catch {
            try? await connection.close()
            // PSQLError's description is generic on purpose; a failing test needs the server's reason.
            throw AdminQueryFailed(query: query.sql, reason: String(reflecting: error))
        }
        try await connection.close()
    }
}
