import DynRegTestSupport
import Foundation
import GRDB
import Synchronization
import Testing

@testable import DynRegStore

/// Product secrets and psks at rest in SQLite: sealed under the master key, bound to their rows, and nowhere in the
/// database's files in clear, also in a store a previous release wrote.
@Suite struct SealedSecretsTests {
    private static let migrations = SQLiteStore.migrator(masterKey: LiveServer.masterKey).migrations
    /// The last migration of the release before sealed secrets: the one before the sealing migration.
    private static let previousRelease = migrations[migrations.firstIndex(of: SQLiteStore.sealingMigration)! - 1]
    /// What an upgrade from it applies: the sealing migration and any after it.
    private static let upgrade = Array(migrations.drop { $0 != SQLiteStore.sealingMigration })

    private func withDirectory(_ body: (String) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dynreg-seal-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        try await body(directory.appendingPathComponent("dynreg.sqlite").path)
    }

    /// A database as the previous release left it: the v4 schema, a key product and a registered device in clear.
    private func writePreviousRelease(path: String, secret: String, psk: String) throws {
        var configuration = Configuration()
        configuration.journalMode = .wal
        let old = try DatabasePool(path: path, configuration: configuration)
        try SQLiteStore.migrator(masterKey: LiveServer.masterKey).migrate(old, upTo: Self.previousRelease)
        try old.write { db in
            try db.execute(
                sql: """
                    INSERT INTO products (id, name, auth_type, secret, dynamic_registration, auto_create,
                        device_quota, allow_clockless, device_count, created_at)
                    VALUES ('PSEALOLD01', 'old', 'key', ?, 1, 1, NULL, 0, 1, 0);
                    INSERT INTO devices (product_id, name, status, psk, created_at, registered_at, registration_count)
                    VALUES ('PSEALOLD01', 'd1', 'registered', ?, 0, 0, 1);
                    """, arguments: [secret, psk])
        }
        try old.close()
    }

    @Test func aPreviousReleasesSecretsAreSealedAndNoFileHoldsASecretInClear() async throws {
        try await withDirectory { path in
            let secrets = SecretSearch.upgradeSecrets()
            try writePreviousRelease(path: path, secret: secrets["old secret"]!, psk: secrets["old psk"]!)
            // The search finds what is there: the previous release's file holds both in clear.
            let before = try SecretSearch.foundInSQLite(secrets, path: path)
            #expect(before.contains("old secret (raw) in dynreg.sqlite"), "\(before)")
            #expect(before.contains("old psk (raw) in dynreg.sqlite"), "\(before)")

            let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            #expect(try await store.migrate() == Self.upgrade)
            try await withRunning(store, migrate: false) {
                // The secrets still verify, and what this release writes, while it runs (the WAL holds the latest
                // pages).
                try await SecretSearch.useAfterUpgrade(store, secrets)
                #expect(FileManager.default.fileExists(atPath: path + "-wal"))
                let running = try SecretSearch.foundInSQLite(secrets, path: path)
                #expect(running.isEmpty, "\(running)")
            }
            let stopped = try SecretSearch.foundInSQLite(secrets, path: path)
            #expect(stopped.isEmpty, "\(stopped)")
            // Stored sealed, each column's value in the `v1:` form.
            let reader = try DatabaseQueue(path: path)
            let stored = try await reader.read { db in
                try String.fetchAll(db, sql: "SELECT secret FROM products UNION ALL SELECT psk FROM devices")
            }
            try reader.close()
            #expect(stored.count == 4)
            #expect(stored.allSatisfy { MasterKey.isSealed($0) }, "\(stored)")
        }
    }

    /// A crash after the sealing migration committed and before the file was rewritten: the clear bytes are still in
    /// free pages, and the next start, with nothing left to migrate, rewrites the file.
    @Test func theFileIsRewrittenAtTheNextStartAfterACrash() async throws {
        try await withDirectory { path in
            let secrets = ["old secret": SecretSearch.randomSecret(), "old psk": SecretSearch.randomPSK()]
            try writePreviousRelease(path: path, secret: secrets["old secret"]!, psk: secrets["old psk"]!)
            // The migration alone, as a store's migrate() runs it, without the rewrite that follows; left open, as a
            // crashed process leaves its WAL (the main file keeps the clear pages until a checkpoint).
            let crashed = try DatabasePool(path: path)
            defer { try? crashed.close() }
            try SQLiteStore.migrator(masterKey: LiveServer.masterKey).migrate(crashed)
            let before = try SecretSearch.foundInSQLite(secrets, path: path)
            #expect(before.contains("old secret (raw) in dynreg.sqlite"), "\(before)")
            let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            #expect(try await store.migrate().isEmpty)
            let after = try SecretSearch.foundInSQLite(secrets, path: path)
            #expect(after.isEmpty, "\(after)")
            #expect(try await store.product(id: "PSEALOLD01")?.secret == secrets["old secret"])
        }
    }

    /// A sealed value opens only in its own row and column: copied elsewhere by someone who can write the database,
    /// it is refused, not served.
    @Test(arguments: [
        "UPDATE devices SET psk = (SELECT psk FROM devices WHERE name = 'd1') WHERE name = 'd2'",
        "UPDATE products SET secret = (SELECT psk FROM devices WHERE name = 'd1') WHERE id = 'PSWAP00001'",
        "UPDATE products SET secret = (SELECT secret FROM products WHERE id = 'PSWAP00002') WHERE id = 'PSWAP00001'",
    ])
    func aSealedValueMovedToAnotherRowIsRefused(_ swap: String) async throws {
        try await withDirectory { path in
            let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            try await withRunning(store) {
                _ = try await store.createProduct(StoreSamples.product("PSWAP00001"))
                _ = try await store.createProduct(StoreSamples.product("PSWAP00002"))
                _ = try await store.register(StoreSamples.attempt("PSWAP00001", "d1", nonce: 1))
                _ = try await store.register(StoreSamples.attempt("PSWAP00001", "d2", nonce: 2))
            }
            let editor = try DatabaseQueue(path: path)
            try await editor.write { db in try db.execute(sql: swap) }
            try editor.close()
            let reopened = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            try await withRunning(reopened) {
                await #expect(
                    throws: MasterKeyError(.wrongKey, swap.hasPrefix("UPDATE devices") ? .psk : .productSecret)
                ) {
                    if swap.hasPrefix("UPDATE devices") {
                        _ = try await reopened.device(productId: "PSWAP00001", deviceName: "d2")
                    } else {
                        _ = try await reopened.product(id: "PSWAP00001")
                    }
                }
            }
        }
    }

    /// The migration seals under the key it is given only if that key opens the CA keys already sealed: otherwise no
    /// key would open both. It refuses and leaves the database as it was, and the right key then migrates it.
    @Test func theSealingMigrationRefusesAKeyThatDoesNotOpenTheCAKeys() async throws {
        try await withDirectory { path in
            let secret = SecretSearch.randomSecret()
            try writePreviousRelease(path: path, secret: secret, psk: SecretSearch.randomPSK())
            let sealedCAKey = try LiveServer.masterKey.seal("CA KEY PEM", for: .caKey(productId: "PSEALOLD01"))
            let editor = try DatabaseQueue(path: path)
            try await editor.write { db in
                try db.execute(
                    sql: """
                        UPDATE products SET auth_type = 'certificate', ca_certificate = 'PEM', ca_sealed_key = ?,
                            ca_key_type = 'p256', certificate_validity_days = 1
                        """, arguments: [sealedCAKey])
            }
            try editor.close()
            let wrongKey = try MasterKey(encoded: String(repeating: "cd", count: 32))
            // Run and stopped, so that its file lock is released before the next store opens the file.
            let refused = try SQLiteStore(path: path, masterKey: wrongKey)
            try await withRunning(refused, migrate: false) {
                await #expect(throws: MasterKeyError(.wrongKey, .caKey)) { _ = try await refused.migrate() }
            }
            #expect(try SecretSearch.foundInSQLite(["secret": secret], path: path).contains { $0.contains("raw") })
            let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            #expect(try await store.migrate() == Self.upgrade)
            #expect(try await store.product(id: "PSEALOLD01")?.secret == secret)
        }
    }

    /// A rotation re-seals everything under the new key: a store with the new key opens it all, one with the old
    /// key opens nothing.
    @Test func rotatingTheMasterKeyReSealsEverySecret() async throws {
        try await withDirectory { path in
            let (newKey, _) = MasterKey.generate()
            let sealedCAKey = try LiveServer.masterKey.seal("CA KEY PEM", for: .caKey(productId: "PROTATE001"))
            do {
                let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
                try await withRunning(store) {
                    var product = StoreSamples.product("PROTATE001")
                    product.authType = .certificate
                    product.certificateAuthority = StoredCertificateAuthority(
                        certificatePEM: "PEM", sealedPrivateKey: sealedCAKey, keyType: "p256",
                        certificateValidityDays: 1)
                    _ = try await store.createProduct(product)
                    _ = try await store.createProduct(StoreSamples.product("PROTATE002"))
                    for index in 0..<(SecretRewrite.pageSize + 5) {
                        _ = try await store.register(
                            StoreSamples.attempt("PROTATE002", "d\(index)", nonce: Int64(index)))
                    }
                    let reports = Reports()
                    let done = try await store.rotateMasterKey(to: newKey) { reports.append($0) }
                    #expect(done == SecretRewriteProgress(products: 2, devices: 1005, deviceTotal: 1005))
                    #expect(reports.all.map(\.devices) == [0, 1000, 1005])
                }
            }
            let rotated = try SQLiteStore(path: path, masterKey: newKey)
            try await withRunning(rotated) {
                let product = try #require(try await rotated.product(id: "PROTATE001"))
                #expect(product.secret == StoreSamples.product("PROTATE001").secret)
                let authority = try #require(product.certificateAuthority)
                #expect(
                    try newKey.open(authority.sealedPrivateKey, for: .caKey(productId: "PROTATE001")) == "CA KEY PEM")
                #expect(try await rotated.device(productId: "PROTATE002", deviceName: "d1004")?.psk == "psk-d1004-1004")
            }
            let old = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            await #expect(throws: MasterKeyError(.wrongKey, .productSecret)) { _ = try await old.products() }
        }
    }
}

private final class Reports: Sendable {
    private let state = Mutex<[SecretRewriteProgress]>([])
    func append(_ progress: SecretRewriteProgress) { state.withLock { $0.append(progress) } }
    var all: [SecretRewriteProgress] { state.withLock { $0 } }
}
