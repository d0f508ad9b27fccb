import DynRegPostgres
import DynRegStore
import DynRegTestSupport
import Foundation
import PostgresNIO
import Testing

@Suite("PostgreSQL URLs")
struct PostgresURLTests {
    @Test func parsesAFullURL() throws {
        let configuration = try PostgresStore.Configuration(
            url: "postgres://dyn%40reg:p%40ss%3Aw0rd@db.example.com:6543/registry?sslmode=verify-full")
        #expect(configuration.host == "db.example.com")
        #expect(configuration.port == 6543)
        #expect(configuration.username == "dyn@reg")
        #expect(configuration.password == "p@ss:w0rd")
        #expect(configuration.database == "registry")
        #expect(configuration.tls == .verifyFull)
    }

    @Test func defaults() throws {
        let remote = try PostgresStore.Configuration(url: "postgresql://dynreg:secret@db.internal/dynreg")
        #expect(remote.port == 5432)
        #expect(remote.tls == .prefer)
        let loopback = try PostgresStore.Configuration(url: "postgres://dynreg:secret@127.0.0.1:5433/dynreg")
        #expect(loopback.tls == .disable)
        #expect(try PostgresStore.Configuration(url: "postgres://u:p@localhost/d").tls == .disable)
        #expect(try PostgresStore.Configuration(url: "postgres://u:p@[::1]:5432/d").host == "::1")
        #expect(try PostgresStore.Configuration(url: "postgres://u:p@[::1]:5432/d").tls == .disable)
        // libpq's default database is the user's name.
        #expect(try PostgresStore.Configuration(url: "postgres://dynreg@db.internal").database == "dynreg")
        #expect(try PostgresStore.Configuration(url: "POSTGRES://u@h/d?sslmode=disable").tls == .disable)
        #expect(try PostgresStore.Configuration(url: "postgres://u@h/d?sslmode=require").tls == .require)
        #expect(try PostgresStore.Configuration(url: "postgres://u@h/d?sslmode=prefer").tls == .prefer)
        #expect(try PostgresStore.Configuration(url: "postgres://u@h/d").password == nil)
    }

    @Test(arguments: [
        "mysql://u:hunter2secret@h/d", "postgres://h/d", "postgres://u:hunter2secret@/d",
        "postgres://u:hunter2secret@h/d?sslmode=sometimes", "postgres://u:hunter2secret@h/d?application_name=x",
        "postgres://u:hunter2secret@h/a/b", "not a url",
    ])
    func refusesBadURLsWithoutQuotingThePassword(_ url: String) {
        do {
            _ = try PostgresStore.Configuration(url: url)
            Issue.record("accepted \(url)")
        } catch {
            #expect(error.code == .invalidInput)
            #expect(!error.message.contains("hunter2secret"))
        }
    }

    @Test func redactedDescriptionHasNoPassword() throws {
        let configuration = try PostgresStore.Configuration(url: "postgres://dynreg:hunter2secret@[fd00::1]:5432/db")
        #expect(configuration.redactedDescription == "postgres://dynreg@[fd00::1]:5432/db?sslmode=prefer")
    }
}

@Suite("PostgreSQL store start")
struct PostgresStartTests {
    /// The password is wrong: the server's reason, at once, and no password in it.
    @Test func wrongPasswordFailsFastWithTheServersReason() async throws {
        guard var configuration = try PostgresTestDatabase.adminConfiguration() else { return }
        configuration.password = "wrong-password-\(UUID().uuidString)"
        let start = ContinuousClock.now
        let error = try await Self.migrationFailure(configuration)
        #expect(error.message.contains("password authentication failed"), "\(error.message)")
        #expect(error.message.contains("28P01"), "\(error.message)")
        #expect(!error.message.contains(configuration.password ?? "?"))
        #expect(!String(reflecting: error).contains(configuration.password ?? "?"))
        // Liveness, not speed: the hang it guards against is 68 s.
        #expect(ContinuousClock.now - start < .seconds(30))
    }

    /// Migrates a store that cannot connect and returns the error, which must say the store is unavailable.
    static func migrationFailure(_ configuration: PostgresStore.Configuration) async throws -> StoreError {
        do {
            _ = try await PostgresStore(
                configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger
            ).migrate()
        } catch let error as StoreError {
            #expect(error.code == .unavailable)
            return error
        }
        throw TestSupportError("connected to \(configuration.host):\(configuration.port)")
    }

    @Test func unknownDatabaseFailsFast() async throws {
        guard var configuration = try PostgresTestDatabase.adminConfiguration() else { return }
        configuration.database = "dynreg_missing_\(UUID().uuidString.prefix(8).lowercased())"
        await #expect(throws: StoreError.self) {
            _ = try await PostgresStore(
                configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger
            ).migrate()
        }
    }

    @Test func unreachableServerFailsFast() async throws {
        // A port nothing listens on: refused at once.
        var configuration = try PostgresStore.Configuration(url: "postgres://dynreg:hunter2secret@127.0.0.1:1/dynreg")
        configuration.connectTimeout = .seconds(3)
        let start = ContinuousClock.now
        let error = try await Self.migrationFailure(configuration)
        #expect(error.message.contains("127.0.0.1:1"), "\(error.message)")
        #expect(!error.message.contains("hunter2secret"))
        #expect(ContinuousClock.now - start < .seconds(30))  // liveness, not speed
    }

    @Test func silentServerTimesOut() async throws {
        // Accepts TCP and never answers: the connect timeout bounds the wait.
        let listener = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(host: "127.0.0.1", port: 0).get()
        defer { listener.close(promise: nil) }
        let port = try #require(listener.localAddress?.port)
        var configuration = try PostgresStore.Configuration(url: "postgres://u:hunter2secret@127.0.0.1:\(port)/d")
        configuration.connectTimeout = .seconds(1)
        let start = ContinuousClock.now
        await #expect(throws: StoreError.self) {
            _ = try await PostgresStore(
                configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger
            ).migrate()
        }
        #expect(ContinuousClock.now - start < .seconds(30))  // liveness, not speed
    }

    /// An answer with a credential must mean committed: a failure at COMMIT (here a deferred trigger) is an
    /// error, and nothing of the registration stays.
    @Test func aFailedCommitIsNeverAcknowledged() async throws {
        try await PostgresTestDatabase.withRunningStore { store, configuration in
            _ = try await store.createProduct(StoreSamples.product("PCOMMIT001"))
            for statement: PostgresQuery in [
                """
                CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'; END $$
                """,
                """
                CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON events
                DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()
                """,
            ] {
                try await PostgresTestDatabase.adminQuery(configuration, statement)
            }
            await #expect(throws: (any Error).self) {
                _ = try await store.register(StoreSamples.attempt("PCOMMIT001", "d1", nonce: 1))
            }
            #expect(try await store.device(productId: "PCOMMIT001", deviceName: "d1") == nil)
            #expect(try await store.product(id: "PCOMMIT001")?.deviceCount == 0)
        }
    }

    /// As on SQLite (SQLiteStoreTests.aCorruptRowIsAnError): a value the store never writes is an error.
    @Test func aCorruptRowIsAnError() async throws {
        try await PostgresTestDatabase.withRunningStore { store, configuration in
            _ = try await store.createProduct(StoreSamples.product("PCORRUPT01"))
            _ = try await store.register(StoreSamples.attempt("PCORRUPT01", "d1", nonce: 1))
            try await PostgresTestDatabase.adminQuery(configuration, "UPDATE products SET auth_type = 'bogus'")
            try await PostgresTestDatabase.adminQuery(configuration, "UPDATE devices SET status = 'bogus'")
            func isCorrupt(_ error: any Error) -> Bool {
                (error as? StoreError)?.code == .unavailable && "\(error)".contains("corrupt row")
            }
            await #expect(performing: { _ = try await store.product(id: "PCORRUPT01") }, throws: isCorrupt)
            await #expect(
                performing: { _ = try await store.device(productId: "PCORRUPT01", deviceName: "d1") },
                throws: isCorrupt)
        }
    }

    @Test func instancesStartingTogetherMigrateOnce() async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            let applied = try await withThrowingTaskGroup(of: [String].self) { group in
                for _ in 0..<4 {
                    group.addTask {
                        let store = PostgresStore(
                            configuration: configuration, masterKey: LiveServer.masterKey,
                            logger: PostgresTestDatabase.logger)
                        return try await store.migrate()
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(applied.count == 4)
            // Each migration was applied once, by whichever start took its lock first.
            let migrations = applied.flatMap { $0 }
            #expect(migrations.count >= 8)
            #expect(Set(migrations).count == migrations.count)
            let connection = try await PostgresConnection.connect(
                configuration: try configuration.connectionConfiguration(), id: 1, logger: PostgresTestDatabase.logger)
            let rows = try await connection.query(
                "SELECT id, name FROM dynreg_migrations ORDER BY id", logger: PostgresTestDatabase.logger
            ).collect()
            try await connection.close()
            #expect(try rows.map { try $0.decode((Int, String).self).1 }.sorted() == migrations.sorted())
            // A later start finds nothing to do and works.
            var later = configuration
            later.leaseTimeout = .seconds(30)  // behaviour, not outages: see withStore
            let store = PostgresStore(
                configuration: later, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
            try await withRunning(store) { try await store.checkHealth() }
        }
    }

    @Test func operationsFailFastWhileTheDatabaseRefusesConnections() async throws {
        do {
            try await refusedConnections()
        } catch let error as PSQLError {
            // PSQLError's description is generic on purpose; a failing test needs the details.
            Issue.record("\(String(reflecting: error))")
        }
    }

    private func refusedConnections() async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            guard let admin = try PostgresTestDatabase.adminConfiguration() else { return }
            let name = configuration.database
            var short = configuration
            short.leaseTimeout = .seconds(10)  // generous: a loaded machine once took over 5 s to lease
            let store = PostgresStore(
                configuration: short, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
            try await withRunning(store) {
                try await store.checkHealth()
                // An outage: open connections dropped, new ones refused.
                try await PostgresTestDatabase.adminQuery(
                    admin, "ALTER DATABASE \(unescaped: name) ALLOW_CONNECTIONS false")
                try await PostgresTestDatabase.adminQuery(
                    admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = \(name)")
                // The pool may hand out a dropped connection a few times (its own error) before it notices.
                var unavailable = false
                let start = ContinuousClock.now
                while !unavailable && ContinuousClock.now - start < .seconds(30) {
                    do {
                        try await store.checkHealth()
                    } catch let error as StoreError {
                        #expect(error.code == .unavailable)
                        unavailable = true
                    } catch {
                        continue
                    }
                }
                #expect(unavailable)
                // Liveness, not speed: the hang it guards against is 68 s.
                #expect(ContinuousClock.now - start < .seconds(30))
                try await PostgresTestDatabase.adminQuery(
                    admin, "ALTER DATABASE \(unescaped: name) ALLOW_CONNECTIONS true")
                // Back: the pool reconnects by itself.
                var healthy = false
                let deadline = ContinuousClock.now + .seconds(30)
                while !healthy && ContinuousClock.now < deadline {
                    healthy = (try? await store.checkHealth()) != nil
                    if !healthy { try await Task.sleep(for: .milliseconds(200)) }
                }
                #expect(healthy)
            }
        }
    }

    /// `init` does no I/O: a store for an unreachable server is made at once, and only `migrate()` fails.
    @Test func initDoesNoIO() async throws {
        var configuration = try PostgresStore.Configuration(url: "postgres://dynreg:hunter2secret@127.0.0.1:1/dynreg")
        configuration.connectTimeout = .seconds(3)
        let store = PostgresStore(
            configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
        await #expect(throws: StoreError.self) { _ = try await store.migrate() }
    }

    /// After `run()` returned, an operation fails at once rather than wait for a pool that is gone.
    @Test func operationsFailOnceTheStoreHasStopped() async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            configuration.leaseTimeout = .seconds(30)  // behaviour, not outages: see withStore
            let store = PostgresStore(
                configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
            try await withRunning(store) { try await store.checkHealth() }
            let start = ContinuousClock.now
            do {
                try await store.checkHealth()
                Issue.record("a stopped store answered")
            } catch let error as StoreError {
                #expect(error.code == .unavailable)
            }
            #expect(ContinuousClock.now - start < .seconds(30))  // liveness, not speed
        }
    }
}
