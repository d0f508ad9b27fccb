import DynRegPostgres
import DynRegStore
import DynRegTestSupport
import Foundation
import PostgresNIO
import Testing

/// Two PostgreSQL stores on one database, as two server instances are: a device change through one must reach the
/// other's login cache (migration v10's notifications), and while the other cannot hear them it must not cache.
///
/// Each check first sees the old row in the second store's cache, so that it fails if the change never reaches it;
/// it then polls (within `deadline`) rather than timing the notification.
@Suite("Login cache across PostgreSQL instances", .serialized)
struct LoginCacheAcrossInstancesTests {
    static let deadline = Duration.seconds(15)

    /// Polls `condition` until it holds or `deadline` passed; whether it held.
    static func eventually(_ condition: () async throws -> Bool) async throws -> Bool {
        let end = ContinuousClock.now + deadline
        while ContinuousClock.now < end {
            if try await condition() { return true }
            try await Task.sleep(for: .milliseconds(20))
        }
        return try await condition()
    }

    /// A writer and a reader store on a fresh database, both listening.
    static func withTwoStores(
        _ body: (_ writer: PostgresStore, _ reader: PostgresStore, PostgresStore.Configuration) async throws -> Void
    ) async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            configuration.leaseTimeout = .seconds(30)  // behaviour, not outages: see withStore
            // Heartbeats are not under test here: a loaded machine must not turn a cache off in the middle of a check.
            configuration.loginListenerTimeout = .seconds(60)
            let logger = PostgresTestDatabase.logger
            let writer = PostgresStore(configuration: configuration, masterKey: LiveServer.masterKey, logger: logger)
            let reader = PostgresStore(configuration: configuration, masterKey: LiveServer.masterKey, logger: logger)
            try await withRunning(writer) {
                try await withRunning(reader) {
                    #expect(try await eventually { writer.isListeningForDeviceChanges })
                    #expect(try await eventually { reader.isListeningForDeviceChanges })
                    try await body(writer, reader, configuration)
                }
            }
        }
    }

    /// `reader` logs `name` in until its cache holds the row `expected` describes: the change reached it.
    static func readerCaches(
        _ reader: PostgresStore, _ name: String, _ expected: @escaping (Device?) -> Bool
    ) async throws -> Bool {
        try await eventually {
            let login = try await reader.deviceForLogin(productId: "PLISTEN001", deviceName: name)
            return expected(login) && expected(reader.cachedLogin(productId: "PLISTEN001", deviceName: name))
        }
    }

    @Test func aChangeThroughOneInstanceReachesTheOthersCache() async throws {
        try await Self.withTwoStores { writer, reader, _ in
            _ = try await writer.createProduct(StoreSamples.product("PLISTEN001"))
            _ = try await writer.register(StoreSamples.attempt("PLISTEN001", "d1", nonce: 1, psk: "psk-one"))
            #expect(try await Self.readerCaches(reader, "d1") { $0?.psk == "psk-one" })

            // Re-registration.
            _ = try await writer.register(StoreSamples.attempt("PLISTEN001", "d1", nonce: 2, psk: "psk-two"))
            #expect(try await Self.readerCaches(reader, "d1") { $0?.psk == "psk-two" })

            _ = try await writer.activateDevice(productId: "PLISTEN001", deviceName: "d1", now: StoreSamples.t0)
            #expect(try await Self.readerCaches(reader, "d1") { $0?.status == .activated })

            _ = try await writer.resetDevice(productId: "PLISTEN001", deviceName: "d1")
            #expect(try await Self.readerCaches(reader, "d1") { $0?.status == .created && $0?.psk == nil })

            // Deleted: the reader's login finds nothing, and nothing stays cached.
            _ = try await writer.register(StoreSamples.attempt("PLISTEN001", "d1", nonce: 3, psk: "psk-three"))
            #expect(try await Self.readerCaches(reader, "d1") { $0?.psk == "psk-three" })
            try await writer.deleteDevice(productId: "PLISTEN001", deviceName: "d1")
            #expect(
                try await Self.eventually {
                    try await reader.deviceForLogin(productId: "PLISTEN001", deviceName: "d1") == nil
                })
            #expect(reader.cachedLogin(productId: "PLISTEN001", deviceName: "d1") == nil)

            // A product's deletion forgets its devices.
            _ = try await writer.register(StoreSamples.attempt("PLISTEN001", "d2", nonce: 4, psk: "psk-d2"))
            #expect(try await Self.readerCaches(reader, "d2") { $0?.psk == "psk-d2" })
            try await writer.deleteProduct(id: "PLISTEN001")
            #expect(
                try await Self.eventually {
                    try await reader.deviceForLogin(productId: "PLISTEN001", deviceName: "d2") == nil
                })
        }
    }

    /// The notification comes from the database, not from dynreg's code: a row changed by hand is seen too, and a
    /// statement changing many rows forgets everything at once.
    @Test func aChangeMadeInSQLReachesTheCache() async throws {
        try await Self.withTwoStores { writer, reader, configuration in
            _ = try await writer.createProduct(StoreSamples.product("PLISTEN001"))
            let names = (0..<70).map { "many\($0)" }
            for (index, name) in names.enumerated() {
                _ = try await writer.register(StoreSamples.attempt("PLISTEN001", name, nonce: Int64(index)))
            }
            #expect(try await Self.readerCaches(reader, "many0") { $0?.status == .registered })
            try await PostgresTestDatabase.adminQuery(
                configuration, "UPDATE devices SET status = 'created' WHERE name = 'many0'")
            #expect(try await Self.readerCaches(reader, "many0") { $0?.status == .created })

            // Past migration v10's 64 rows a statement notifies `*`.
            for name in names {
                _ = try await reader.deviceForLogin(productId: "PLISTEN001", deviceName: name)
            }
            #expect(reader.cachedLogin(productId: "PLISTEN001", deviceName: "many69")?.status == .registered)
            try await PostgresTestDatabase.adminQuery(configuration, "UPDATE devices SET activated_at = now()")
            #expect(try await Self.readerCaches(reader, "many69") { $0?.activatedAt != nil })
            #expect(try await Self.readerCaches(reader, "many1") { $0?.activatedAt != nil })
        }
    }

    /// While the reader's listener is down (its connection ended, reconnections refused), its logins read the
    /// database: a change is seen at once, with no notification to carry it. Once it listens again, it caches
    /// again, and changes reach it by notification.
    @Test func withoutItsListenerAnInstanceDoesNotCache() async throws {
        try await Self.withTwoStores { writer, reader, configuration in
            guard let admin = try PostgresTestDatabase.adminConfiguration() else { return }
            let database = configuration.database
            _ = try await writer.createProduct(StoreSamples.product("PLISTEN001"))
            _ = try await writer.register(StoreSamples.attempt("PLISTEN001", "d1", nonce: 1, psk: "psk-one"))
            #expect(try await Self.readerCaches(reader, "d1") { $0?.psk == "psk-one" })

            // Connections the stores hold stay; new ones, the listener's reconnections, are refused.
            try await PostgresTestDatabase.adminQuery(
                admin, "ALTER DATABASE \(unescaped: database) ALLOW_CONNECTIONS false")
            try await PostgresTestDatabase.adminQuery(
                admin,
                """
                SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                WHERE application_name = \(reader.loginListenerApplicationName)
                """)
            #expect(try await Self.eventually { !reader.isListeningForDeviceChanges })
            #expect(reader.cachedLogin(productId: "PLISTEN001", deviceName: "d1") == nil)

            for (nonce, psk) in [(2, "psk-two"), (3, "psk-three")] {
                _ = try await writer.register(
                    StoreSamples.attempt("PLISTEN001", "d1", nonce: Int64(nonce), psk: psk))
                // At once: no polling.
                #expect(try await reader.deviceForLogin(productId: "PLISTEN001", deviceName: "d1")?.psk == psk)
                #expect(reader.cachedLogin(productId: "PLISTEN001", deviceName: "d1") == nil)
            }
            #expect(!reader.isListeningForDeviceChanges)

            try await PostgresTestDatabase.adminQuery(
                admin, "ALTER DATABASE \(unescaped: database) ALLOW_CONNECTIONS true")
            #expect(try await Self.eventually { reader.isListeningForDeviceChanges })
            #expect(try await Self.readerCaches(reader, "d1") { $0?.psk == "psk-three" })
            _ = try await writer.resetDevice(productId: "PLISTEN001", deviceName: "d1")
            #expect(try await Self.readerCaches(reader, "d1") { $0?.status == .created })
        }
    }

    /// A listener whose heartbeat does not come back in time turns the cache off, whatever its connection looks
    /// like: here the timeout is far shorter than the time between heartbeats.
    @Test func aListenerWithoutHeartbeatsTurnsTheCacheOff() async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            configuration.leaseTimeout = .seconds(30)  // behaviour, not outages: see withStore
            configuration.loginListenerHeartbeat = .seconds(60)
            configuration.loginListenerTimeout = .milliseconds(200)
            let store = PostgresStore(
                configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
            try await withRunning(store) {
                _ = try await store.createProduct(StoreSamples.product("PLISTEN001"))
                _ = try await store.register(StoreSamples.attempt("PLISTEN001", "d1", nonce: 1))
                var cachedWhileOn = false
                var offAfterCaching = false
                let end = ContinuousClock.now + Self.deadline
                while ContinuousClock.now < end, !offAfterCaching {
                    if store.isListeningForDeviceChanges {
                        _ = try await store.deviceForLogin(productId: "PLISTEN001", deviceName: "d1")
                        if store.cachedLogin(productId: "PLISTEN001", deviceName: "d1") != nil { cachedWhileOn = true }
                    } else if cachedWhileOn {
                        offAfterCaching = true
                        #expect(store.cachedLogin(productId: "PLISTEN001", deviceName: "d1") == nil)
                    }
                    try await Task.sleep(for: .milliseconds(5))
                }
                #expect(offAfterCaching)
            }
        }
    }
}
