import DynRegTestSupport
import Foundation
import GRDB
import Testing

@testable import DynRegStore

/// What only the embedded store promises: its durability setting and the plans of its hot statements.
@Suite struct SQLiteStoreTests {
    private func withSQLiteStore(_ body: (SQLiteStore, String) async throws -> Void) async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dynreg-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("dynreg.sqlite").path
        let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
        try await withRunning(store) { try await body(store, path) }
    }

    /// GRDB switches a WAL writer to NORMAL; a 200 must mean the commit reached the disk, so the writer is FULL.
    @Test func theWriterCommitsWithSynchronousFull() async throws {
        try await withSQLiteStore { store, path in
            #expect(try store.writerSynchronousMode() == 2)
            // Also after a registration went through the group committer.
            _ = try await store.createProduct(StoreSamples.product("PSYNC00001"))
            _ = try await store.register(StoreSamples.attempt("PSYNC00001", "dev1", nonce: 1))
            #expect(try store.writerSynchronousMode() == 2)
        }
    }

    @Test func revokingADevicesCertificatesUsesTheDeviceIndex() async throws {
        try await withSQLiteStore { store, _ in
            let plan = try store.queryPlan(SQLiteStore.revokeActiveCertificatesSQL, arguments: [0, "P", "d"])
            #expect(
                plan.contains { $0.contains("USING INDEX certificates_by_device (product_id=? AND device_name=?)") },
                "plan: \(plan)")
            let listing = try store.queryPlan(
                SQLiteStore.deviceCertificatesSQL, arguments: ["P", "d", nil as String?, "P", nil as String?, 10])
            #expect(
                listing.contains { $0.contains("certificates_by_device (product_id=? AND device_name=?)") },
                "plan: \(listing)")
        }
    }

    /// The overview's per-minute counts read the rowid range after a boundary found from the end, never the log.
    @Test func perMinuteCountsUseTheRowid() async throws {
        try await withSQLiteStore { store, _ in
            let plan = try store.queryPlan(SQLiteStore.perMinuteSQL, arguments: [0, 60])
            #expect(plan.contains { $0.contains("SEARCH events USING INTEGER PRIMARY KEY (rowid>?)") }, "plan: \(plan)")
            #expect(!plan.contains { $0.contains("USE TEMP B-TREE FOR ORDER BY") && !$0.contains("GROUP BY") })
        }
    }

    /// Concurrent writes share transactions; one that fails must take back its own writes and nobody else's.
    @Test func aFailingWriteRollsBackAloneInItsSharedTransaction() async throws {
        struct Refused: Error {}
        try await withSQLiteStore { store, _ in
            let outcomes = try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                for index in 0..<200 {
                    group.addTask {
                        do {
                            try await store.groupCommit.write { db in
                                try db.execute(
                                    sql: """
                                        INSERT INTO events (time, product_id, device_name, outcome, remote_address, endpoint)
                                        VALUES (0, 'PG', ?, 'x', 'a', 'e')
                                        """,
                                    arguments: ["d\(index)"])
                                if index % 3 == 0 { throw Refused() }
                            }
                            return (index, true)
                        } catch is Refused {
                            return (index, false)
                        }
                    }
                }
                return try await group.reduce(into: [Int: Bool]()) { $0[$1.0] = $1.1 }
            }
            #expect(outcomes.count == 200)
            #expect(outcomes.allSatisfy { $0.value == ($0.key % 3 != 0) })
            let names = Set(try await store.events(productId: "PG", limit: 1000).map(\.deviceName))
            #expect(names == Set((0..<200).filter { $0 % 3 != 0 }.map { "d\($0)" }))
        }
    }

    /// A row the store did not write as it reads it (edited by hand, written by a newer version) is an error, never
    /// a default: a product read as key-auth or a device read as `created` would be served as what nobody made.
    @Test(arguments: [
        "UPDATE products SET auth_type = 'bogus'",
        "UPDATE products SET ca_certificate = 'PEM'",
        "UPDATE devices SET status = 'bogus'",
    ])
    func aCorruptRowIsAnError(_ corruption: String) async throws {
        try await withSQLiteStore { store, path in
            _ = try await store.createProduct(StoreSamples.product("PCORRUPT01"))
            _ = try await store.register(StoreSamples.attempt("PCORRUPT01", "d1", nonce: 1))
            let editor = try DatabaseQueue(path: path)
            try await editor.write { db in try db.execute(sql: corruption) }
            try editor.close()
            func isCorrupt(_ error: any Error) -> Bool {
                (error as? StoreError)?.code == .unavailable && "\(error)".contains("corrupt row")
            }
            if corruption.contains("products") {
                await #expect(performing: { _ = try await store.product(id: "PCORRUPT01") }, throws: isCorrupt)
                await #expect(performing: { _ = try await store.products() }, throws: isCorrupt)
            } else {
                await #expect(
                    performing: { _ = try await store.device(productId: "PCORRUPT01", deviceName: "d1") },
                    throws: isCorrupt)
                await #expect(
                    performing: {
                        _ = try await store.register(StoreSamples.attempt("PCORRUPT01", "d1", nonce: 2))
                    }, throws: isCorrupt)
            }
        }
    }

    /// The group committer is the store's service: a registration that comes before `run()` waits for it, one that
    /// comes after `run()` returned fails at once.
    @Test func registrationsWaitForTheStoreToRunAndFailOnceItStopped() async throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("dynreg-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteStore(
            path: directory.appendingPathComponent("dynreg.sqlite").path, masterKey: LiveServer.masterKey)
        _ = try await store.migrate()
        _ = try await store.createProduct(StoreSamples.product("PSERVICE01"))
        let early = try await withThrowingTaskGroup(of: RegistrationDecision?.self) { group in
            group.addTask { try await store.register(StoreSamples.attempt("PSERVICE01", "d1", nonce: 1)) }
            try await Task.sleep(for: .milliseconds(200))
            group.addTask {
                try await store.run()
                return nil
            }
            let first = try await group.next()
            group.cancelAll()
            try await group.waitForAll()
            return first
        }
        guard case .issued(let device, _)?? = early else {
            Issue.record("not issued: \(String(describing: early))")
            return
        }
        #expect(device.name == "d1")
        await #expect {
            _ = try await store.register(StoreSamples.attempt("PSERVICE01", "d2", nonce: 2))
        } throws: { error in
            (error as? StoreError)?.code == .unavailable
        }
        #expect(try await store.device(productId: "PSERVICE01", deviceName: "d2") == nil)
    }

    @Test func aSecondStoreOnTheSameFileIsRefused() async throws {
        try await withSQLiteStore { _, path in
            #expect {
                _ = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
            } throws: { error in
                (error as? StoreError)?.code == .unavailable && "\(error)".contains("another dynreg server")
            }
        }
    }

    /// A database written by a version before the v3 migration keeps its certificates, and they keep working.
    @Test func certificatesSurviveTheMoveToARowidTable() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dynreg-sqlite-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("dynreg.sqlite").path
        do {
            let old = try DatabaseQueue(path: path)
            try SQLiteStore.migrator(masterKey: LiveServer.masterKey).migrate(
                old, upTo: "v2: certificate authorities and device certificates")
            try await old.write { db in
                try db.execute(
                    sql: """
                        INSERT INTO products (id, name, auth_type, secret, dynamic_registration, auto_create,
                            device_quota, allow_clockless, device_count, created_at)
                        VALUES ('PMIGRATE01', 'm', 'certificate', 'secret-0123456789abcdef', 1, 1, NULL, 0, 1, 0);
                        INSERT INTO devices (product_id, name, status, psk, created_at, registered_at, registration_count)
                        VALUES ('PMIGRATE01', 'd1', 'registered', NULL, 0, 0, 2);
                        INSERT INTO certificates (serial, product_id, device_name, fingerprint, pem, not_before, not_after,
                            issued_at, revoked_at)
                        VALUES ('aa01', 'PMIGRATE01', 'd1', 'fp-old', 'PEM-OLD', 0, 100, 1, 5),
                               ('aa02', 'PMIGRATE01', 'd1', 'fp-new', 'PEM-NEW', 0, 100, 6, NULL);
                        """)
            }
        }
        let store = try SQLiteStore(path: path, masterKey: LiveServer.masterKey)
        // Everything after v2, in order.
        #expect(
            try await store.migrate()
                == Array(SQLiteStore.migrator(masterKey: LiveServer.masterKey).migrations.dropFirst(2)))
        try await withRunning(store, migrate: false) { try await checkMigratedCertificates(store) }
    }

    private func checkMigratedCertificates(_ store: SQLiteStore) async throws {
        let certificates = try await store.certificates(productId: "PMIGRATE01", deviceName: "d1")
        #expect(certificates.map(\.serial) == ["aa02", "aa01"])
        #expect(certificates.map(\.pem) == ["PEM-NEW", "PEM-OLD"])
        #expect(certificates[1].revokedAt == Date(timeIntervalSince1970: 5))
        #expect(try await store.certificate(fingerprint: "fp-new")?.serial == "aa02")
        #expect(try await store.revokedCertificates(productId: "PMIGRATE01").map(\.serial) == ["aa01"])
        // A new registration revokes the active certificate and adds its own; serials stay unique per product.
        let issued = StoreSamples.certificate(
            "aa03", "d1", productId: "PMIGRATE01", issuedAt: Date(timeIntervalSince1970: 10))
        _ = try await store.register(StoreSamples.certificateAttempt("d1", issued, nonce: 9))
        #expect(
            try await store.certificates(productId: "PMIGRATE01", deviceName: "d1").filter { $0.revokedAt == nil }
                .map(\.serial) == ["aa03"])
        let duplicate = StoreSamples.certificate(
            "aa03", "d2", productId: "PMIGRATE01", issuedAt: Date(timeIntervalSince1970: 11))
        await #expect(throws: (any Error).self) {
            _ = try await store.register(StoreSamples.certificateAttempt("d2", duplicate, nonce: 10))
        }
        // Nothing of the failed registration stays: its savepoint was rolled back.
        #expect(try await store.device(productId: "PMIGRATE01", deviceName: "d2") == nil)
        #expect(try await store.product(id: "PMIGRATE01")?.deviceCount == 1)
    }
}
