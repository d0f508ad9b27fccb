import DynRegProtocol
package import Foundation
import GRDB
import ServiceLifecycle

/// The embedded default: one SQLite file in WAL mode with `synchronous=FULL`, so an acknowledged
/// registration survives a crash of the process or the machine.
///
/// Product secrets and psks are stored sealed under `masterKey` (``SealedField``); the database, its WAL and its
/// lock file are private to the server's user (0600).
///
/// A `Service`: `run()` runs the group committer that registrations and audit events go through; call
/// ``migrate()`` before serving.
package final class SQLiteStore: RegistrationStore, Service {
    private let pool: DatabasePool
    /// Registrations and audit events, the writes on every device request, share transactions.
    let groupCommit: GroupCommitter
    /// Products as device requests see them; exact because this process is the file's only writer (`lock`).
    private let admissionCache = ProductCache()
    /// Devices as broker logins see them; exact for the same reason, and invalidated after each device write.
    let loginCache: LoginCache
    private let lock: FileLock
    private let masterKey: MasterKey

    /// Opens (creating if needed) the database at `path`; ``migrate()`` brings its schema up to date.
    ///
    /// One store at a time may have the file open: a second one, in this process or another, fails with
    /// `StoreError.Code.unavailable` rather than serve from a stale product cache.
    ///
    /// The database and its `-wal`, `-shm` and `.lock` files are made mode 0600, also when they already exist
    /// (written before under a looser umask): SQLite creates the WAL and shared-memory files with the database
    /// file's mode, so the database file is created 0600 before SQLite opens it.
    package init(
        path: String, masterKey: MasterKey, metrics: StoreMetrics = .none, loginCacheCapacity: Int = 100_000
    ) throws {
        self.masterKey = masterKey
        loginCache = LoginCache(capacity: loginCacheCapacity)
        lock = try FileLock(path: path + ".lock")
        try PrivateFiles.restrict(path, alsoExisting: [path + "-wal", path + "-shm"])
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.busyMode = .timeout(10)
        configuration.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        // Keep bound values (secrets) out of error descriptions.
        configuration.publicStatementArguments = false
        pool = try DatabasePool(path: path, configuration: configuration)
        groupCommit = GroupCommitter(pool: pool, metrics: metrics)
        // GRDB puts the writer in synchronous=NORMAL when it enables WAL, after prepareDatabase ran: set FULL
        // again on the writer, the only connection that commits, and check it there.
        let synchronous = try pool.writeWithoutTransaction { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            // Every registration reads and writes index pages on the writer; SQLite's default 2 MiB cache sends
            // most of them back to the kernel with millions of devices.
            try db.execute(sql: "PRAGMA cache_size = -\(Self.writerCacheKiB)")
            return try Int.fetchOne(db, sql: "PRAGMA synchronous")
        }
        guard synchronous == 2 else { throw StoreError(.unavailable, "SQLite refused synchronous=FULL") }
    }

    static let writerCacheKiB = 16 * 1024

    /// Applies pending migrations; returns their names.
    package func migrate() async throws -> [String] {
        let migrator = Self.migrator(masterKey: masterKey)
        let done = try await pool.read { db in try migrator.appliedIdentifiers(db) }
        // Off the cooperative pool: a migration may rewrite a big table.
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            migrator.asyncMigrate(pool) { result in continuation.resume(with: result.map { _ in }) }
        }
        try await forgetClearPages()
        return migrator.migrations.filter { !done.contains($0) }
    }

    /// The migration that sealed the secrets a previous release kept in clear.
    static let sealingMigration = "v7: product secrets and psks sealed under the master key"

    /// After secrets were rewritten in place (sealed by v7, or re-sealed by a rotation), their former bytes can remain
    /// in the file's free space and in the WAL. The transaction that rewrote them also set `user_version` to
    /// ``clearPagesPending`` (it commits with them); this then rebuilds every page from the live rows (VACUUM),
    /// clears the mark and empties the WAL. A crash in between leaves the mark, and the next start does it again.
    /// Otherwise nothing: it rewrites the whole file.
    private func forgetClearPages() async throws {
        try await pool.writeWithoutTransaction { db in
            guard try Int.fetchOne(db, sql: "PRAGMA user_version") == Self.clearPagesPending else { return }
            try db.execute(sql: "VACUUM")
            try db.execute(sql: "PRAGMA user_version = 0")
            try db.execute(sql: "PRAGMA wal_checkpoint(TRUNCATE)")
        }
    }

    /// `user_version` while pages may hold a rewritten secret's former bytes (GRDB keeps migrations elsewhere).
    static let clearPagesPending = 1

    package func rotateMasterKey(
        to newKey: MasterKey, progress: @escaping @Sendable (SecretRewriteProgress) -> Void
    ) async throws -> SecretRewriteProgress {
        defer {
            admissionCache.invalidate()
            loginCache.invalidateAll()
        }
        let rewrite = SecretRewrite.rotation(from: masterKey, to: newKey)
        let done = try await pool.write { db in try Self.rewriteSecrets(db, rewrite, progress: progress) }
        try await forgetClearPages()
        return done
    }

    /// Rewrites every CA key, product secret and psk as `rewrite` says, in the caller's transaction: products, then
    /// devices by primary key, ``SecretRewrite/pageSize`` at a time (each page read whole before it is written).
    static func rewriteSecrets(
        _ db: Database, _ rewrite: SecretRewrite, progress: (SecretRewriteProgress) -> Void = { _ in }
    ) throws -> SecretRewriteProgress {
        var done = SecretRewriteProgress()
        try db.execute(sql: "PRAGMA user_version = \(clearPagesPending)")
        for row in try Row.fetchAll(db, sql: "SELECT id, secret, ca_sealed_key FROM products") {
            let id: String = row[0]
            try db.execute(
                sql: "UPDATE products SET secret = ? WHERE id = ?",
                arguments: [try rewrite.secret(row[1], productId: id), id])
            if let stored: String = row[2], let key = try rewrite.caKey(stored, productId: id) {
                try db.execute(sql: "UPDATE products SET ca_sealed_key = ? WHERE id = ?", arguments: [key, id])
            }
            done.products += 1
        }
        done.deviceTotal = try Int.fetchOne(db, sql: "SELECT count(*) FROM devices WHERE psk IS NOT NULL") ?? 0
        progress(done)
        var after = ("", "")
        while true {
            let page = try Row.fetchAll(
                db,
                sql: """
                    SELECT product_id, name, psk FROM devices
                    WHERE psk IS NOT NULL AND (product_id, name) > (?, ?) ORDER BY product_id, name LIMIT ?
                    """, arguments: [after.0, after.1, SecretRewrite.pageSize])
            guard !page.isEmpty else { break }
            for row in page {
                let (productId, name): (String, String) = (row[0], row[1])
                try db.cachedStatement(sql: "UPDATE devices SET psk = ? WHERE product_id = ? AND name = ?")
                    .execute(arguments: [
                        try rewrite.psk(row[2], productId: productId, deviceName: name), productId, name,
                    ])
                after = (productId, name)
            }
            done.devices += page.count
            progress(done)
        }
        return done
    }

    /// Runs the group committer until graceful shutdown; registrations and audit events wait for it.
    package func run() async throws {
        // The file is this process's while the store runs: a store that has stopped lets another open it at
        // once (a restart in the same process), even if something still holds a reference to it.
        defer { lock.release() }
        await groupCommit.run()
    }

    /// The writer connection's `PRAGMA synchronous` (2 is FULL): what decides whether a commit is durable.
    func writerSynchronousMode() throws -> Int? {
        try pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
    }

    /// Named, append-only migrations; one transaction each. Only v7 uses application types: see there.
    static func migrator(masterKey: MasterKey) -> DatabaseMigrator {
        var migrator = DatabaseMigrator()
        migrator.registerMigration("v1: products, devices, nonces, events") { db in
            try db.execute(
                sql: """
                    CREATE TABLE products (
                        id TEXT PRIMARY KEY NOT NULL,
                        name TEXT NOT NULL,
                        auth_type TEXT NOT NULL,
                        secret TEXT NOT NULL,
                        dynamic_registration INTEGER NOT NULL,
                        auto_create INTEGER NOT NULL,
                        device_quota INTEGER,
                        allow_clockless INTEGER NOT NULL,
                        -- Kept in step with devices so a quota check is O(1) with millions of devices.
                        device_count INTEGER NOT NULL DEFAULT 0,
                        created_at REAL NOT NULL
                    );
                    CREATE TABLE devices (
                        product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
                        name TEXT NOT NULL,
                        status TEXT NOT NULL,
                        psk TEXT,
                        created_at REAL NOT NULL,
                        registered_at REAL,
                        activated_at REAL,
                        registration_count INTEGER NOT NULL DEFAULT 0,
                        PRIMARY KEY (product_id, name)
                    ) WITHOUT ROWID;
                    CREATE TABLE nonces (
                        product_id TEXT NOT NULL,
                        device_name TEXT NOT NULL,
                        timestamp INTEGER NOT NULL,
                        nonce INTEGER NOT NULL,
                        expires_at REAL,
                        PRIMARY KEY (product_id, device_name, timestamp, nonce)
                    ) WITHOUT ROWID;
                    CREATE INDEX nonces_expiry ON nonces(expires_at) WHERE expires_at IS NOT NULL;
                    CREATE TABLE events (
                        id INTEGER PRIMARY KEY AUTOINCREMENT,
                        time REAL NOT NULL,
                        product_id TEXT NOT NULL,
                        device_name TEXT NOT NULL,
                        outcome TEXT NOT NULL,
                        remote_address TEXT NOT NULL,
                        endpoint TEXT NOT NULL
                    );
                    CREATE INDEX events_by_product ON events(product_id, id);
                    """)
        }
        migrator.registerMigration("v2: certificate authorities and device certificates") { db in
            try db.execute(
                sql: """
                    ALTER TABLE products ADD COLUMN ca_certificate TEXT;
                    ALTER TABLE products ADD COLUMN ca_sealed_key TEXT;
                    ALTER TABLE products ADD COLUMN ca_key_type TEXT;
                    ALTER TABLE products ADD COLUMN certificate_validity_days INTEGER;
                    CREATE TABLE certificates (
                        serial TEXT NOT NULL,
                        product_id TEXT NOT NULL,
                        device_name TEXT NOT NULL,
                        fingerprint TEXT NOT NULL,
                        pem TEXT NOT NULL,
                        not_before REAL NOT NULL,
                        not_after REAL NOT NULL,
                        issued_at REAL NOT NULL,
                        revoked_at REAL,
                        PRIMARY KEY (product_id, serial)
                    ) WITHOUT ROWID;
                    CREATE UNIQUE INDEX certificates_by_fingerprint ON certificates(fingerprint);
                    CREATE INDEX certificates_by_device ON certificates(product_id, device_name);
                    """)
        }
        // WITHOUT ROWID keeps whole rows, PEM included, in the primary key's B-tree, and the key is a random
        // serial: every certificate landed on a random leaf of big rows. A rowid table appends the rows and
        // leaves only small index entries to random places.
        migrator.registerMigration("v3: certificates in a rowid table") { db in
            try db.execute(
                sql: """
                    CREATE TABLE certificates_v3 (
                        id INTEGER PRIMARY KEY,
                        serial TEXT NOT NULL,
                        product_id TEXT NOT NULL,
                        device_name TEXT NOT NULL,
                        fingerprint TEXT NOT NULL,
                        pem TEXT NOT NULL,
                        not_before REAL NOT NULL,
                        not_after REAL NOT NULL,
                        issued_at REAL NOT NULL,
                        revoked_at REAL
                    );
                    INSERT INTO certificates_v3 (serial, product_id, device_name, fingerprint, pem, not_before,
                        not_after, issued_at, revoked_at)
                    SELECT serial, product_id, device_name, fingerprint, pem, not_before, not_after, issued_at,
                        revoked_at
                    FROM certificates ORDER BY issued_at;
                    DROP TABLE certificates;
                    ALTER TABLE certificates_v3 RENAME TO certificates;
                    CREATE UNIQUE INDEX certificates_by_serial ON certificates(product_id, serial);
                    CREATE UNIQUE INDEX certificates_by_fingerprint ON certificates(fingerprint);
                    CREATE INDEX certificates_by_device ON certificates(product_id, device_name);
                    """)
        }
        // What a byte-identical retry is answered with lives in its replay entry, and goes with it. Operator CAs
        // that vouch for certificates devices bring (`ClientCert`) are PEM certificates, one after another.
        migrator.registerMigration("v4: answers for retries, trusted device CAs, topic rules, device key types") { db in
            try db.execute(
                sql: """
                    ALTER TABLE nonces ADD COLUMN request_digest BLOB;
                    ALTER TABLE nonces ADD COLUMN answer_length INTEGER;
                    ALTER TABLE nonces ADD COLUMN answer_payload TEXT;
                    ALTER TABLE nonces ADD COLUMN answer_created INTEGER;
                    ALTER TABLE nonces ADD COLUMN answer_registration INTEGER;
                    ALTER TABLE products ADD COLUMN trusted_ca_certificates TEXT;
                    ALTER TABLE products ADD COLUMN topic_rules TEXT;
                    ALTER TABLE products ADD COLUMN device_key_type TEXT;
                    """)
        }
        // Refusals before the product secret is proven are counted per minute, not stored a row each.
        // `store_health` is what /health writes to while writes are failing, to see them recover.
        migrator.registerMigration("v5: refusals counted per minute, a row for write probes") { db in
            try db.execute(
                sql: """
                    CREATE TABLE refusals (
                        minute INTEGER NOT NULL,
                        product_id TEXT NOT NULL,
                        endpoint TEXT NOT NULL,
                        outcome TEXT NOT NULL,
                        remote_address TEXT NOT NULL,
                        count INTEGER NOT NULL,
                        PRIMARY KEY (minute, product_id, endpoint, outcome, remote_address)
                    ) WITHOUT ROWID;
                    CREATE TABLE store_health (id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL);
                    """)
        }
        migrator.registerMigration("v6: product limits, lockouts, devices by creation time") { db in
            try db.execute(
                sql: """
                    CREATE TABLE product_limits (
                        product_id TEXT PRIMARY KEY NOT NULL REFERENCES products(id) ON DELETE CASCADE,
                        limits TEXT NOT NULL
                    );
                    CREATE TABLE lockouts (
                        product_id TEXT NOT NULL REFERENCES products(id) ON DELETE CASCADE,
                        remote_address TEXT NOT NULL,
                        failures INTEGER NOT NULL,
                        locked_at REAL NOT NULL,
                        locked_until REAL NOT NULL,
                        PRIMARY KEY (product_id, remote_address)
                    ) WITHOUT ROWID;
                    CREATE INDEX devices_by_created ON devices(product_id, created_at);
                    """)
        }
        // Product secrets and psks were stored in clear. Sealing them needs the master key, which SQL cannot have, so
        // this migration is written in Swift (the same pass as a key rotation, `rewriteSecrets`). It runs like the
        // others, inside the migration's transaction: a database is wholly clear (v6) or wholly sealed (v7), never
        // half, and a crash in the middle leaves it at v6 to run again. It first opens the CA keys with the key it was
        // given, and fails without sealing anything if they do not open: the secrets must be sealed under the key the
        // CA keys already are. No schema change: the columns keep their names and now hold `v1:` values. `migrate()`
        // then rewrites the file without the clear bytes (`forgetClearPages`).
        migrator.registerMigration(sealingMigration) { db in
            _ = try rewriteSecrets(db, .sealing(under: masterKey))
        }
        return migrator
    }

    // MARK: Products

    package func createProduct(_ product: Product) async throws -> Product {
        defer { admissionCache.invalidate() }
        return try await pool.write { db in
            if try Self.fetchProduct(db, id: product.id, masterKey) != nil {
                throw StoreError.productExists(product.id)
            }
            try db.execute(
                sql: """
                    INSERT INTO products (id, name, auth_type, secret, dynamic_registration, auto_create,
                        device_quota, allow_clockless, device_count, created_at, ca_certificate, ca_sealed_key,
                        ca_key_type, certificate_validity_days, trusted_ca_certificates, topic_rules, device_key_type)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                arguments: [
                    product.id, product.name, product.authType.rawValue,
                    try masterKey.seal(product.secret, for: .productSecret(productId: product.id)),
                    product.dynamicRegistration,
                    product.autoCreate, product.deviceQuota, product.allowClocklessDevices,
                    product.createdAt.timeIntervalSince1970, product.certificateAuthority?.certificatePEM,
                    product.certificateAuthority?.sealedPrivateKey, product.certificateAuthority?.keyType,
                    product.certificateAuthority?.certificateValidityDays,
                    StoreRows.trustedCertificatesColumn(product.trustedDeviceCAs),
                    StoreRows.topicRulesColumn(product.topicPolicy),
                    StoreRows.deviceKeyTypeColumn(product.deviceKeyType),
                ])
            return try Self.requireProduct(db, id: product.id, masterKey)
        }
    }

    package func products() async throws -> [Product] {
        try await pool.read { db in
            try Row.fetchAll(db, sql: "SELECT * FROM products ORDER BY created_at, id").map {
                try Self.product(from: $0, masterKey)
            }
        }
    }

    package func product(id: String) async throws -> Product? {
        try await pool.read { db in try Self.fetchProduct(db, id: id, masterKey) }
    }

    package func productForAdmission(id: String) async throws -> Product? {
        if let cached = admissionCache.product(id: id) { return cached }
        let generation = admissionCache.generation
        let product = try await product(id: id)
        if let product { admissionCache.store(product, ifStillAt: generation) }
        return product
    }

    package func updateProduct(id: String, _ update: ProductUpdate) async throws -> Product {
        defer { admissionCache.invalidate() }
        return try await pool.write { db in
            var product = try Self.requireProduct(db, id: id, masterKey)
            if let name = update.name { product.name = name }
            if let value = update.dynamicRegistration { product.dynamicRegistration = value }
            if let value = update.autoCreate { product.autoCreate = value }
            if let value = update.deviceQuota { product.deviceQuota = value }
            if let value = update.allowClocklessDevices { product.allowClocklessDevices = value }
            if let value = update.trustedDeviceCAs { product.trustedDeviceCAs = value }
            if let value = update.topicPolicy { product.topicPolicy = value }
            if let value = update.deviceKeyType { product.deviceKeyType = value }
            try db.execute(
                sql: """
                    UPDATE products SET name = ?, dynamic_registration = ?, auto_create = ?, device_quota = ?,
                        allow_clockless = ?, trusted_ca_certificates = ?, topic_rules = ?, device_key_type = ?
                    WHERE id = ?
                    """,
                arguments: [
                    product.name, product.dynamicRegistration, product.autoCreate, product.deviceQuota,
                    product.allowClocklessDevices, StoreRows.trustedCertificatesColumn(product.trustedDeviceCAs),
                    StoreRows.topicRulesColumn(product.topicPolicy),
                    StoreRows.deviceKeyTypeColumn(product.deviceKeyType),
                    id,
                ])
            return product
        }
    }

    package func rotateProductSecret(id: String, newSecret: String) async throws -> Product {
        defer { admissionCache.invalidate() }
        return try await pool.write { db in
            _ = try Self.requireProduct(db, id: id, masterKey)
            try db.execute(
                sql: "UPDATE products SET secret = ? WHERE id = ?",
                arguments: [try masterKey.seal(newSecret, for: .productSecret(productId: id)), id])
            return try Self.requireProduct(db, id: id, masterKey)
        }
    }

    package func deleteProduct(id: String) async throws {
        defer {
            admissionCache.invalidate()
            loginCache.invalidateAll()
        }
        return try await pool.write { db in
            _ = try Self.requireProduct(db, id: id, masterKey)
            try db.execute(sql: "DELETE FROM devices WHERE product_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM nonces WHERE product_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM certificates WHERE product_id = ?", arguments: [id])
            try db.execute(sql: "DELETE FROM products WHERE id = ?", arguments: [id])
        }
    }

    // MARK: Devices

    package func createDevice(productId: String, deviceName: String, now: Date) async throws -> Device {
        try await pool.write { db in
            let product = try Self.requireProduct(db, id: productId, masterKey)
            if try Self.fetchDevice(db, productId: productId, name: deviceName, masterKey) != nil {
                throw StoreError.deviceExists(productId, deviceName)
            }
            if let quota = product.deviceQuota, product.deviceCount >= quota {
                throw StoreError.quotaExceeded(productId, quota: quota)
            }
            try Self.insertDevice(
                db, productId: productId, name: deviceName, status: .created, sealedPSK: nil, now: now)
            return try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
        }
    }

    package func devices(productId: String, status: DeviceStatus?, limit: Int, after: String?) async throws -> [Device]
    {
        try await pool.read { db in
            _ = try Self.requireProduct(db, id: productId, masterKey)
            var sql = "SELECT * FROM devices WHERE product_id = ?"
            var arguments: StatementArguments = [productId]
            if let status {
                sql += " AND status = ?"
                arguments += [status.rawValue]
            }
            if let after {
                sql += " AND name > ?"
                arguments += [after]
            }
            sql += " ORDER BY name LIMIT ?"
            arguments += [limit]
            return try Row.fetchAll(db, sql: sql, arguments: arguments).map { try Self.device(from: $0, masterKey) }
        }
    }

    package func device(productId: String, deviceName: String) async throws -> Device? {
        try await pool.read { db in try Self.fetchDevice(db, productId: productId, name: deviceName, masterKey) }
    }

    package func deviceForLogin(productId: String, deviceName: String) async throws -> Device? {
        try await loginCache.device(productId: productId, deviceName: deviceName) {
            try await device(productId: productId, deviceName: deviceName)
        }
    }

    package func deleteDevice(productId: String, deviceName: String) async throws {
        try await loginCache.writing(productId: productId, deviceName: deviceName) {
            try await deleteDeviceRows(productId: productId, deviceName: deviceName)
            return ((), nil)
        }
    }

    private func deleteDeviceRows(productId: String, deviceName: String) async throws {
        try await pool.write { db in
            _ = try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
            try db.execute(
                sql: "DELETE FROM devices WHERE product_id = ? AND name = ?", arguments: [productId, deviceName])
            try db.execute(
                sql: "DELETE FROM nonces WHERE product_id = ? AND device_name = ?", arguments: [productId, deviceName])
            try Self.revokeActiveCertificates(db, productId: productId, deviceName: deviceName, now: Date())
            try db.execute(
                sql: "UPDATE products SET device_count = device_count - 1 WHERE id = ?", arguments: [productId])
        }
    }

    package func resetDevice(productId: String, deviceName: String) async throws -> Device {
        try await loginCache.writing(productId: productId, deviceName: deviceName) {
            let device = try await resetDeviceRow(productId: productId, deviceName: deviceName)
            return (device, device)
        }
    }

    private func resetDeviceRow(productId: String, deviceName: String) async throws -> Device {
        try await pool.write { db in
            _ = try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
            try db.execute(
                sql: """
                    UPDATE devices SET status = 'created', psk = NULL, registered_at = NULL, activated_at = NULL
                    WHERE product_id = ? AND name = ?
                    """,
                arguments: [productId, deviceName])
            try db.execute(
                sql: "DELETE FROM nonces WHERE product_id = ? AND device_name = ? AND expires_at IS NULL",
                arguments: [productId, deviceName])
            try Self.revokeActiveCertificates(db, productId: productId, deviceName: deviceName, now: Date())
            return try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
        }
    }

    package func activateDevice(productId: String, deviceName: String, now: Date) async throws -> Device {
        // Through the group commit: a broker's first logins after devices registered activate them by the thousand.
        let masterKey = self.masterKey
        return try await loginCache.writing(productId: productId, deviceName: deviceName) {
            // The next login finds the activated device in memory, rather than reading it again.
            let device = try await groupCommit.write { db in
                let device = try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
                if device.status == .activated { return device }
                try db.cachedStatement(
                    sql: "UPDATE devices SET status = 'activated', activated_at = ? WHERE product_id = ? AND name = ?"
                ).execute(arguments: [now.timeIntervalSince1970, productId, deviceName])
                // Clockless devices' nonces were kept until activation: registration is now refused anyway.
                try db.cachedStatement(
                    sql: "DELETE FROM nonces WHERE product_id = ? AND device_name = ? AND expires_at IS NULL"
                ).execute(arguments: [productId, deviceName])
                return try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
            }
            return (device, device)
        }
    }

    // MARK: Registration

    package func register(_ attempt: RegistrationAttempt) async throws -> RegistrationDecision {
        let masterKey = self.masterKey
        // Sealed here, before the single writer's turn: one AES-GCM operation that no other registration waits for.
        let sealedPSK = try attempt.credential.psk.map {
            try masterKey.seal($0, for: .psk(productId: attempt.productId, deviceName: attempt.deviceName))
        }
        return try await loginCache.writing(productId: attempt.productId, deviceName: attempt.deviceName) {
            let decision = try await groupCommit.write { db in
                let decision = try Self.decide(db, attempt, sealedPSK: sealedPSK, masterKey)
                try Self.insertEvent(db, attempt.event(for: decision))
                return decision
            }
            // The device's first login finds its new psk in memory.
            guard case .issued(let device, _) = decision else { return (decision, nil) }
            return (decision, device)
        }
    }

    /// The rules are `RegistrationRules.decide`'s; this applies them to the rows and writes what they issue.
    /// `sealedPSK`: the attempt's psk as the row keeps it.
    private static func decide(
        _ db: Database, _ attempt: RegistrationAttempt, sealedPSK: String?, _ masterKey: MasterKey
    ) throws -> RegistrationDecision {
        // Only the columns the decision needs: a certificate product's row also holds its CA, which this
        // statement, run for every registration on the single writer, would otherwise decode each time.
        let limits = try Row.fetchOne(
            db.cachedStatement(sql: "SELECT auto_create, device_quota, device_count FROM products WHERE id = ?"),
            arguments: [attempt.productId]
        ).map { row in
            RegistrationRules.ProductLimits(autoCreate: row[0], deviceQuota: row[1], deviceCount: row[2])
        }
        // Without opening its psk: this runs on the single writer, and the device gets the attempt's psk anyway.
        let existing = try fetchDevice(
            db, productId: attempt.productId, name: attempt.deviceName, masterKey, openingPSK: false)
        var firstAnswer: RegistrationAnswer?
        let outcome = try RegistrationRules.decide(product: limits, device: existing?.status) {
            // The replay entry commits with the credential, so a rejected attempt leaves no trace to trip over.
            let repeatable = attempt.repeatable
            try db.cachedStatement(
                sql: """
                    INSERT INTO nonces (product_id, device_name, timestamp, nonce, expires_at, request_digest,
                        answer_length, answer_payload, answer_created, answer_registration)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    ON CONFLICT DO NOTHING
                    """
            ).execute(arguments: [
                attempt.productId, attempt.deviceName, attempt.timestamp, attempt.nonce,
                attempt.replayExpiry?.timeIntervalSince1970, repeatable.map { Data($0.digest) },
                repeatable?.payload.length, repeatable?.payload.payload, existing == nil,
                (existing?.registrationCount ?? 0) + 1,
            ])
            if db.changesCount == 1 { return .fresh }
            firstAnswer = try recordedAnswer(db, attempt, device: existing)
            return firstAnswer == nil ? .reused : .repeated
        }
        switch outcome {
        case .refuse(let code): return .rejected(code)
        case .repeatAnswer:
            guard let firstAnswer else { throw StoreError(.unavailable, "a retry without its recorded answer") }
            return .repeated(firstAnswer)
        case .issue: break
        }
        let now = attempt.now.timeIntervalSince1970
        var device: Device
        if let existing {
            try db.cachedStatement(
                sql: """
                    UPDATE devices SET status = 'registered', psk = ?, registered_at = ?,
                        registration_count = registration_count + 1
                    WHERE product_id = ? AND name = ?
                    """
            ).execute(arguments: [sealedPSK, now, attempt.productId, attempt.deviceName])
            device = existing
            device.status = .registered
            device.registrationCount += 1
        } else {
            try insertDevice(
                db, productId: attempt.productId, name: attempt.deviceName, status: .registered, sealedPSK: sealedPSK,
                now: attempt.now, registeredAt: attempt.now)
            device = Device(
                productId: attempt.productId, name: attempt.deviceName, status: .registered, psk: nil,
                createdAt: attempt.now, registeredAt: nil, activatedAt: nil, registrationCount: 1)
        }
        // Built here rather than read back: the row is what these statements just wrote.
        device.psk = attempt.credential.psk
        device.registeredAt = Date(timeIntervalSince1970: now)
        if case .certificate(let certificate) = attempt.credential {
            try revokeActiveCertificates(
                db, productId: attempt.productId, deviceName: attempt.deviceName, now: attempt.now)
            try db.cachedStatement(
                sql: """
                    INSERT INTO certificates (serial, product_id, device_name, fingerprint, pem, not_before,
                        not_after, issued_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """
            ).execute(arguments: [
                certificate.serial, attempt.productId, attempt.deviceName, certificate.fingerprint,
                certificate.pem, certificate.notBefore.timeIntervalSince1970,
                certificate.notAfter.timeIntervalSince1970, now,
            ])
        }
        return .issued(device, created: existing == nil)
    }

    /// The answer recorded with the attempt's replay entry, when the attempt is a retry of that request.
    private static func recordedAnswer(
        _ db: Database, _ attempt: RegistrationAttempt, device: Device?
    ) throws -> RegistrationAnswer? {
        guard
            let row = try Row.fetchOne(
                db.cachedStatement(
                    sql: """
                        SELECT request_digest, answer_registration, answer_length, answer_payload, answer_created
                        FROM nonces WHERE product_id = ? AND device_name = ? AND timestamp = ? AND nonce = ?
                        """),
                arguments: [attempt.productId, attempt.deviceName, attempt.timestamp, attempt.nonce])
        else { return nil }
        let recorded: Data? = row[0]
        guard
            RegistrationRules.isRetry(
                recorded: recorded.map { Array($0) }, registration: row[1], of: attempt.repeatable?.digest,
                current: device?.status, count: device?.registrationCount),
            let length: Int = row[2], let payload: String = row[3], let created: Bool = row[4]
        else { return nil }
        return RegistrationAnswer(payload: EncryptedPayload(length: length, payload: payload), created: created)
    }

    package func purgeExpiredNonces(now: Date) async throws -> Int {
        try await pool.write { db in
            try db.execute(
                sql: "DELETE FROM nonces WHERE expires_at IS NOT NULL AND expires_at < ?",
                arguments: [now.timeIntervalSince1970])
            return db.changesCount
        }
    }

    // MARK: Certificates

    package func certificates(
        productId: String, deviceName: String, limit: Int, after: String?
    ) async throws -> [DeviceCertificate] {
        try await pool.read { db in
            _ = try Self.requireDevice(db, productId: productId, name: deviceName, masterKey)
            return try Row.fetchAll(
                db, sql: Self.deviceCertificatesSQL,
                arguments: [productId, deviceName, after?.lowercased(), productId, after?.lowercased(), limit]
            ).map(Self.certificate(from:))
        }
    }

    package func revokeCertificate(productId: String, serial: String, now: Date) async throws -> DeviceCertificate {
        try await pool.write { db in
            try db.execute(
                sql:
                    "UPDATE certificates SET revoked_at = ? WHERE product_id = ? AND serial = ? AND revoked_at IS NULL",
                arguments: [now.timeIntervalSince1970, productId, serial.lowercased()])
            guard
                let row = try Row.fetchOne(
                    db, sql: "SELECT * FROM certificates WHERE product_id = ? AND serial = ?",
                    arguments: [productId, serial.lowercased()])
            else {
                throw StoreError.certificateNotFound(productId, serial: serial)
            }
            return try Self.certificate(from: row)
        }
    }

    package func revokedCertificates(productId: String) async throws -> [DeviceCertificate] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: "SELECT * FROM certificates WHERE product_id = ? AND revoked_at IS NOT NULL ORDER BY revoked_at",
                arguments: [productId]
            ).map(Self.certificate(from:))
        }
    }

    package func certificate(fingerprint: String) async throws -> DeviceCertificate? {
        try await pool.read { db in
            try Row.fetchOne(
                db, sql: "SELECT * FROM certificates WHERE fingerprint = ?", arguments: [fingerprint.lowercased()]
            ).map(Self.certificate(from:))
        }
    }

    private static func revokeActiveCertificates(
        _ db: Database, productId: String, deviceName: String, now: Date
    )
        throws
    {
        try db.cachedStatement(sql: revokeActiveCertificatesSQL)
            .execute(arguments: [now.timeIntervalSince1970, productId, deviceName])
    }

    // Without statistics SQLite plans this on the primary key's product_id prefix, i.e. it scans every certificate
    // of the product, so registrations slowed down as certificates accumulated.
    static let revokeActiveCertificatesSQL = """
        UPDATE certificates INDEXED BY certificates_by_device SET revoked_at = ?
        WHERE product_id = ? AND device_name = ? AND revoked_at IS NULL
        """
    /// Newest first, by issue time then serial, after the cursor's certificate (none: no cursor row, no rows).
    static let deviceCertificatesSQL = """
        SELECT * FROM certificates INDEXED BY certificates_by_device
        WHERE product_id = ? AND device_name = ?
            AND (? IS NULL OR (issued_at, serial) < (
                SELECT issued_at, serial FROM certificates WHERE product_id = ? AND serial = ?))
        ORDER BY issued_at DESC, serial DESC LIMIT ?
        """

    /// SQLite's plan for `sql`, one line per step: lets tests check that a query uses the index it should.
    func queryPlan(_ sql: String, arguments: StatementArguments) throws -> [String] {
        try pool.read { db in
            try Row.fetchAll(db, sql: "EXPLAIN QUERY PLAN " + sql, arguments: arguments).map { $0["detail"] }
        }
    }

    private static func certificate(from row: Row) throws -> DeviceCertificate {
        DeviceCertificate(
            serial: row["serial"], productId: row["product_id"], deviceName: row["device_name"],
            fingerprint: row["fingerprint"], pem: row["pem"],
            notBefore: Date(timeIntervalSince1970: row["not_before"]),
            notAfter: Date(timeIntervalSince1970: row["not_after"]),
            issuedAt: Date(timeIntervalSince1970: row["issued_at"]),
            revokedAt: (row["revoked_at"] as Double?).map(Date.init(timeIntervalSince1970:)))
    }

    // MARK: Audit log

    package func recordEvent(_ event: RegistrationEvent) async throws {
        try await groupCommit.write { db in try Self.insertEvent(db, event) }
    }

    private static func insertEvent(_ db: Database, _ event: RegistrationEvent) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO events (time, product_id, device_name, outcome, remote_address, endpoint)
                VALUES (?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            event.time.timeIntervalSince1970, event.productId, event.deviceName, event.outcome,
            event.remoteAddress, event.endpoint,
        ])
    }

    package func events(productId: String?, _ query: EventQuery) async throws -> [RegistrationEvent] {
        try await pool.read { db in
            // One product: its index. Every product: the log backwards by id, the newest `scanLimit` at most.
            let source =
                productId == nil
                ? "events WHERE (? IS NULL OR id > (SELECT MAX(id) FROM events) - ?)"
                : "events INDEXED BY events_by_product WHERE product_id = ?"
            let scope: StatementArguments =
                productId == nil ? [query.scanLimit, query.scanLimit] : [productId]
            return try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM \(source) AND (? IS NULL OR id < ?) AND (? IS NULL OR time >= ?)
                        AND (? IS NULL OR outcome = ?) AND (? IS NULL OR device_name = ?)
                    ORDER BY id DESC LIMIT ?
                    """,
                arguments: scope
                    + [
                        query.before, query.before, query.since?.timeIntervalSince1970,
                        query.since?.timeIntervalSince1970, query.outcome, query.outcome, query.deviceName,
                        query.deviceName, query.limit,
                    ]
            ).map { row in
                RegistrationEvent(
                    id: row["id"], time: Date(timeIntervalSince1970: row["time"]), productId: row["product_id"],
                    deviceName: row["device_name"], outcome: row["outcome"], remoteAddress: row["remote_address"],
                    endpoint: row["endpoint"])
            }
        }
    }

    package func registrationsPerMinute(since: Date) async throws -> [OutcomeMinute] {
        try await pool.read { db in
            try Row.fetchAll(
                db, sql: Self.perMinuteSQL,
                arguments: [since.timeIntervalSince1970 - eventClockSlack, since.timeIntervalSince1970]
            ).map { row in
                OutcomeMinute(
                    minute: Date(timeIntervalSince1970: TimeInterval(row["minute"] as Int64) * 60),
                    outcome: row["outcome"], count: row["count"])
            }
        }
    }

    /// The boundary is the newest event older than `since` minus the slack, found walking the rowid back from the
    /// end; the count then reads the rowid range after it.
    package static let perMinuteSQL = """
        SELECT CAST(time / 60 AS INTEGER) AS minute, outcome, COUNT(*) AS count FROM events
        WHERE id > COALESCE((SELECT id FROM events WHERE time < ? ORDER BY id DESC LIMIT 1), 0)
            AND time >= ? AND substr(outcome, 1, 6) <> 'Admin.'
        GROUP BY minute, outcome ORDER BY minute, outcome
        """

    /// Oldest first by id (ids grow with time), a batch per transaction, so registrations wait for no long delete.
    package func purgeAudit(before: Date) async throws -> AuditPurge {
        var purge = AuditPurge()
        let cutoff = before.timeIntervalSince1970
        while true {
            let removed = try await groupCommit.write { db -> Int in
                try db.execute(
                    sql: """
                        DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT \(Self.purgeBatch))
                            AND time < ?
                        """, arguments: [cutoff])
                return db.changesCount
            }
            purge.events += removed
            if removed < Self.purgeBatch { break }
        }
        purge.refusals = try await groupCommit.write { db -> Int in
            try db.execute(sql: "DELETE FROM refusals WHERE minute < ?", arguments: [Int64(cutoff)])
            let refusals = db.changesCount
            try db.execute(sql: "DELETE FROM lockouts WHERE locked_until < ?", arguments: [cutoff])
            return refusals
        }
        return purge
    }

    static let purgeBatch = 5_000

    package func recordRefusals(_ counts: [RefusalCount]) async throws {
        guard !counts.isEmpty else { return }
        try await groupCommit.write { db in
            let upsert = try db.cachedStatement(
                sql: """
                    INSERT INTO refusals (minute, product_id, endpoint, outcome, remote_address, count)
                    VALUES (?, ?, ?, ?, ?, ?)
                    ON CONFLICT (minute, product_id, endpoint, outcome, remote_address)
                    DO UPDATE SET count = count + excluded.count
                    """)
            for count in counts {
                try upsert.execute(arguments: [
                    Int64(count.minute.timeIntervalSince1970), count.productId, count.endpoint, count.outcome,
                    count.remoteAddress, count.count,
                ])
            }
        }
    }

    package func refusals(productId: String?, limit: Int) async throws -> [RefusalCount] {
        try await pool.read { db in
            let rows =
                if let productId {
                    try Row.fetchAll(
                        db, sql: "SELECT * FROM refusals WHERE product_id = ? ORDER BY minute DESC LIMIT ?",
                        arguments: [productId, limit])
                } else {
                    try Row.fetchAll(db, sql: "SELECT * FROM refusals ORDER BY minute DESC LIMIT ?", arguments: [limit])
                }
            return rows.map { row in
                RefusalCount(
                    minute: Date(timeIntervalSince1970: TimeInterval(row["minute"] as Int64)),
                    productId: row["product_id"], endpoint: row["endpoint"], outcome: row["outcome"],
                    remoteAddress: row["remote_address"], count: row["count"])
            }
        }
    }

    package func limits(productId: String) async throws -> ProductLimits {
        try await pool.read { db in
            guard
                let text = try String.fetchOne(
                    db, sql: "SELECT limits FROM product_limits WHERE product_id = ?", arguments: [productId])
            else { return ProductLimits() }
            return try StoreRows.limits(text, productId: productId)
        }
    }

    package func setLimits(productId: String, _ limits: ProductLimits) async throws {
        try await pool.write { db in
            _ = try Self.requireProduct(db, id: productId, masterKey)
            try db.execute(
                sql: """
                    INSERT INTO product_limits (product_id, limits) VALUES (?, ?)
                    ON CONFLICT (product_id) DO UPDATE SET limits = excluded.limits
                    """, arguments: [productId, StoreRows.limitsColumn(limits)])
        }
    }

    package func devicesCreated(productId: String, since: Date) async throws -> Int {
        try await pool.read { db in
            try Int.fetchOne(
                db, sql: "SELECT COUNT(*) FROM devices WHERE product_id = ? AND created_at >= ?",
                arguments: [productId, since.timeIntervalSince1970]) ?? 0
        }
    }

    package func recordLockout(_ lockout: Lockout) async throws {
        try await groupCommit.write { db in
            try db.execute(
                sql: """
                    INSERT OR REPLACE INTO lockouts (product_id, remote_address, failures, locked_at, locked_until)
                    SELECT ?, ?, ?, ?, ? WHERE EXISTS (SELECT 1 FROM products WHERE id = ?)
                    """,
                arguments: [
                    lockout.productId, lockout.remoteAddress, lockout.failures, lockout.lockedAt.timeIntervalSince1970,
                    lockout.lockedUntil.timeIntervalSince1970, lockout.productId,
                ])
        }
    }

    package func lockouts(productId: String?, endingAfter now: Date) async throws -> [Lockout] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT * FROM lockouts WHERE locked_until > ? AND (? IS NULL OR product_id = ?)
                    ORDER BY locked_at DESC
                    """, arguments: [now.timeIntervalSince1970, productId, productId]
            ).map { row in
                Lockout(
                    productId: row["product_id"], remoteAddress: row["remote_address"], failures: row["failures"],
                    lockedAt: Date(timeIntervalSince1970: row["locked_at"]),
                    lockedUntil: Date(timeIntervalSince1970: row["locked_until"]))
            }
        }
    }

    package func clearLockout(productId: String, remoteAddress: String, now: Date) async throws -> Bool {
        try await pool.write { db in
            try db.execute(
                sql: """
                    UPDATE lockouts SET locked_until = ?
                    WHERE product_id = ? AND remote_address = ? AND locked_until > ?
                    """,
                arguments: [now.timeIntervalSince1970, productId, remoteAddress, now.timeIntervalSince1970])
            return db.changesCount > 0
        }
    }

    package func refusalTotals(outcome: String, since: Date, atLeast: Int) async throws -> [RefusalCount] {
        try await pool.read { db in
            try Row.fetchAll(
                db,
                sql: """
                    SELECT product_id, remote_address, MIN(minute) AS first, SUM(count) AS total FROM refusals
                    WHERE minute >= ? AND outcome = ? AND product_id <> ''
                    GROUP BY product_id, remote_address HAVING SUM(count) >= ?
                    """, arguments: [Int64(since.timeIntervalSince1970), outcome, atLeast]
            ).map { row in
                RefusalCount(
                    minute: Date(timeIntervalSince1970: TimeInterval(row["first"] as Int64)),
                    productId: row["product_id"], endpoint: "", outcome: outcome,
                    remoteAddress: row["remote_address"], count: row["total"])
            }
        }
    }

    package func deviceCounts() async throws -> [DeviceStatus: Int] {
        try await pool.read { db in
            var counts: [DeviceStatus: Int] = [:]
            for row in try Row.fetchAll(db, sql: "SELECT status, COUNT(*) AS n FROM devices GROUP BY status") {
                if let status = DeviceStatus(rawValue: row["status"]) { counts[status] = row["n"] }
            }
            return counts
        }
    }

    /// Reads answer on a full disk, so while commits are failing a small write must succeed too: then /health is
    /// 503 until space returns, and a load balancer stops sending registrations that would fail.
    package func checkHealth() async throws {
        _ = try await pool.read { db in try Int.fetchOne(db, sql: "SELECT 1") }
        guard groupCommit.isFailingToWrite else { return }
        try await groupCommit.write { db in
            try db.execute(
                sql: "INSERT OR REPLACE INTO store_health (id, checked_at) VALUES (1, ?)",
                arguments: [Date().timeIntervalSince1970])
        }
    }

    // MARK: Rows

    private static func insertDevice(
        _ db: Database, productId: String, name: String, status: DeviceStatus, sealedPSK: String?, now: Date,
        registeredAt: Date? = nil
    ) throws {
        try db.cachedStatement(
            sql: """
                INSERT INTO devices (product_id, name, status, psk, created_at, registered_at, registration_count)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """
        ).execute(arguments: [
            productId, name, status.rawValue, sealedPSK, now.timeIntervalSince1970, registeredAt?.timeIntervalSince1970,
            registeredAt == nil ? 0 : 1,
        ])
        try db.cachedStatement(sql: "UPDATE products SET device_count = device_count + 1 WHERE id = ?")
            .execute(arguments: [productId])
    }

    private static func fetchProduct(_ db: Database, id: String, _ masterKey: MasterKey) throws -> Product? {
        try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM products WHERE id = ?"), arguments: [id])
            .map { try product(from: $0, masterKey) }
    }

    private static func requireProduct(_ db: Database, id: String, _ masterKey: MasterKey) throws -> Product {
        guard let product = try fetchProduct(db, id: id, masterKey) else {
            throw StoreError.productNotFound(id)
        }
        return product
    }

    /// `openingPSK: false` leaves the device's psk `nil`.
    private static func fetchDevice(
        _ db: Database, productId: String, name: String, _ masterKey: MasterKey, openingPSK: Bool = true
    ) throws -> Device? {
        try Row.fetchOne(
            db.cachedStatement(sql: "SELECT * FROM devices WHERE product_id = ? AND name = ?"),
            arguments: [productId, name]
        ).map { try device(from: $0, masterKey, openingPSK: openingPSK) }
    }

    private static func requireDevice(
        _ db: Database, productId: String, name: String, _ masterKey: MasterKey
    ) throws -> Device {
        guard let device = try fetchDevice(db, productId: productId, name: name, masterKey) else {
            throw StoreError.deviceNotFound(productId, name)
        }
        return device
    }

    private static func product(from row: Row, _ masterKey: MasterKey) throws -> Product {
        try StoreRows.product(
            id: row["id"], name: row["name"], authType: row["auth_type"], sealedSecret: row["secret"],
            dynamicRegistration: row["dynamic_registration"], autoCreate: row["auto_create"],
            deviceQuota: row["device_quota"], allowClocklessDevices: row["allow_clockless"],
            deviceCount: row["device_count"], createdAt: Date(timeIntervalSince1970: row["created_at"]),
            caCertificate: row["ca_certificate"], caSealedKey: row["ca_sealed_key"], caKeyType: row["ca_key_type"],
            certificateValidityDays: row["certificate_validity_days"],
            trustedCACertificates: row["trusted_ca_certificates"], topicRules: row["topic_rules"],
            deviceKeyType: row["device_key_type"], masterKey: masterKey)
    }

    private static func device(from row: Row, _ masterKey: MasterKey, openingPSK: Bool = true) throws -> Device {
        try StoreRows.device(
            productId: row["product_id"], name: row["name"], status: row["status"],
            sealedPSK: openingPSK ? row["psk"] : nil,
            createdAt: Date(timeIntervalSince1970: row["created_at"]),
            registeredAt: (row["registered_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            activatedAt: (row["activated_at"] as Double?).map(Date.init(timeIntervalSince1970:)),
            registrationCount: row["registration_count"], masterKey: masterKey)
    }
}
