import DynRegStore
import DynRegTestSupport
import Foundation
import Logging
import PostgresNIO
import Testing

@testable import DynRegPostgres

/// Product secrets and psks at rest in PostgreSQL: a previous release's clear rows are sealed by the migration, and a
/// dump of the database holds no secret in clear.
@Suite struct PostgresSealedSecretsTests {
    /// The migration that seals, and the last one of the release before it.
    private static let sealing = Migrations.all.first { $0.step == .sealSecrets }!
    private static let previousRelease = sealing.id - 1

    @Test func aPreviousReleasesSecretsAreSealedAndADumpHoldsNoSecretInClear() async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            let secrets = SecretSearch.upgradeSecrets()
            let logger = PostgresTestDatabase.logger
            let connection = try await PostgresConnection.connect(
                configuration: try configuration.connectionConfiguration(), id: 1, logger: logger)
            do {
                _ = try await Migrations.run(
                    on: connection, masterKey: LiveServer.masterKey, upTo: Self.previousRelease, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO products (id, name, auth_type, secret, dynamic_registration, auto_create, device_quota,
                        allow_clockless, device_count, created_at)
                    VALUES ('PSEALOLD01', 'old', 'key', \(secrets["old secret"]!), true, true, NULL, false, 1, now())
                    """, logger: logger)
                try await connection.query(
                    """
                    INSERT INTO devices (product_id, name, status, psk, created_at, registered_at, registration_count)
                    VALUES ('PSEALOLD01', 'd1', 'registered', \(secrets["old psk"]!), now(), now(), 1)
                    """, logger: logger)
            } catch {
                try? await connection.close()
                throw error
            }
            try await connection.close()
            // The search finds what is there: the previous release's dump holds both in clear.
            let before = try await dump(configuration, secrets: secrets)
            #expect(before.contains("old secret (raw) in pg_dump"), "\(before)")
            #expect(before.contains("old psk (raw) in pg_dump"), "\(before)")

            var running = configuration
            running.leaseTimeout = .seconds(30)
            let store = PostgresStore(configuration: running, masterKey: LiveServer.masterKey, logger: logger)
            #expect(try await store.migrate() == Migrations.all.filter { $0.id >= Self.sealing.id }.map(\.name))
            try await withRunning(store, migrate: false) {
                try await SecretSearch.useAfterUpgrade(store, secrets)
                let after = try await dump(configuration, secrets: secrets)
                #expect(after.isEmpty, "\(after)")
            }
            // A store with another key opens nothing, and says which key is wrong.
            let (otherKey, _) = MasterKey.generate()
            let other = PostgresStore(configuration: running, masterKey: otherKey, logger: logger)
            try await withRunning(other) {
                await #expect(throws: MasterKeyError(.wrongKey, .productSecret)) { _ = try await other.products() }
            }
        }
    }

    /// A rotation re-seals every value in one transaction: the new key opens them all, the old one none.
    @Test func rotatingTheMasterKeyReSealsEverySecret() async throws {
        try await PostgresTestDatabase.withRunningStore { store, configuration in
            _ = try await store.createProduct(StoreSamples.product("PROTATE002"))
            for index in 0..<(SecretRewrite.pageSize + 5) {
                _ = try await store.register(StoreSamples.attempt("PROTATE002", "d\(index)", nonce: Int64(index)))
            }
            let (newKey, _) = MasterKey.generate()
            let done = try await store.rotateMasterKey(to: newKey) { _ in }
            #expect(done == SecretRewriteProgress(products: 1, devices: 1005, deviceTotal: 1005))
            let rotated = PostgresStore(
                configuration: configuration, masterKey: newKey, logger: PostgresTestDatabase.logger)
            let (secret, psk) = try await withRunning(rotated) {
                (
                    try await rotated.product(id: "PROTATE002")?.secret,
                    try await rotated.device(productId: "PROTATE002", deviceName: "d1004")?.psk
                )
            }
            #expect(secret == StoreSamples.product("PROTATE002").secret)
            #expect(psk == "psk-d1004-1004")
            await #expect(throws: MasterKeyError(.wrongKey, .productSecret)) { _ = try await store.products() }
        }
    }

    /// The forms of `secrets` that a `pg_dump` of the test's database holds.
    private func dump(_ configuration: PostgresStore.Configuration, secrets: [String: String]) async throws -> [String]
    {
        let candidates = ["/usr/lib/postgresql/15/bin/pg_dump", "pg_dump"]
        let program = candidates.first { FileManager.default.isExecutableFile(atPath: $0) } ?? "pg_dump"
        let output = try await runCommand(program, ["--dbname", try PostgresTestDatabase.url(of: configuration)])
        #expect(output.status == 0, "\(output.stderr)")
        #expect(output.stdout.contains("COPY public.devices"))
        return SecretSearch.found(secrets, in: Data(output.stdout.utf8), place: "pg_dump")
    }
}

/// `dynreg master-key rotate` on PostgreSQL, with the key from the environment, as several instances keep it.
@Suite(.enabled(if: BuiltExecutable.dynreg != nil, "the dynreg executable was not built"))
struct PostgresMasterKeyRotateTests {
    @Test func rotateWritesTheNewKeyToTheFileItIsGivenAndReSealsTheDatabase() async throws {
        try await PostgresTestDatabase.withRunningStore { store, configuration in
            _ = try await store.createProduct(StoreSamples.product("PROTATE003"))
            _ = try await store.register(StoreSamples.attempt("PROTATE003", "d1", nonce: 1))
            let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
                "dynreg-rk-\(UUID().uuidString)")
            defer { try? FileManager.default.removeItem(at: directory) }
            let keyFile = directory.appendingPathComponent("new-key")
            let rotated = try await runDynreg(
                [
                    "master-key", "rotate", "--data-dir", directory.path, "--new-key-file", keyFile.path,
                ],
                environment: [
                    "DYNREG_MASTER_KEY": LiveServer.encodedMasterKey,
                    "DYNREG_DATABASE": try PostgresTestDatabase.url(of: configuration),
                ])
            #expect(rotated.status == 0, "\(rotated.stderr)")
            #expect(rotated.stdout.contains("committed: 1 products and 1 device psks"), "\(rotated.stdout)")
            #expect(rotated.stdout.contains("set DYNREG_MASTER_KEY to the key in \(keyFile.path)"), "\(rotated.stdout)")
            let newKey = try MasterKey(encoded: try String(contentsOf: keyFile, encoding: .utf8))
            let reopened = PostgresStore(
                configuration: configuration, masterKey: newKey, logger: PostgresTestDatabase.logger)
            let psk = try await withRunning(reopened) {
                try await reopened.device(productId: "PROTATE003", deviceName: "d1")?.psk
            }
            #expect(psk == "psk-d1-1")
            await #expect(throws: MasterKeyError(.wrongKey, .productSecret)) { _ = try await store.products() }
        }
    }
}
