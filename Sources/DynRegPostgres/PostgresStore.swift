import DynRegProtocol
package import DynRegStore
package import Foundation
package import Logging
import PostgresNIO
import ServiceLifecycle
import Synchronization

/// The store on PostgreSQL, for several server instances sharing one database.
///
/// Everything that must hold across instances is decided by the database: uniqueness, quotas (a new device's
/// registration locks its product row, which holds the count), the replay cache and activation. A transaction that
/// takes both locks takes the product row before the device row, and none asks for the product while holding a
/// device, so they cannot deadlock one another.
///
/// Broker logins read devices from a cache in each instance (``LoginListener`` keeps it in step with every
/// instance's writes through LISTEN/NOTIFY, and turns it off while it cannot).
///
/// It is a `Service`: `run()` runs the connection pool, the lease watchdog and the login listener. `init` does no I/O; ``migrate()``
/// connects once and applies migrations. Operations wait for `run()` to start; after it returned they fail with
/// `unavailable`, as they do while the database cannot be reached for `leaseTimeout`.
/// Values always travel as bound parameters: `\(value)` inside a `PostgresQuery` literal becomes `$n`.
package struct PostgresStore: RegistrationStore {
    private let client: PostgresClient
    private let configuration: Configuration
    private let logger: Logger
    private let watchdog: Watchdog
    private let metrics: StoreMetrics
    private let masterKey: MasterKey
    private let loginCache: LoginCache
    private let loginListener: LoginListener
    private let registrations: CommitBatches<PendingRegistration, RegistrationDecision>

    /// Prepares the pool, which connects when ``run()`` runs. Product secrets and psks are stored sealed under
    /// `masterKey` (``SealedField``): every instance on the database needs the same one.
    package init(configuration: Configuration, masterKey: MasterKey, logger: Logger, metrics: StoreMetrics = .none) {
        self.metrics = metrics
        self.masterKey = masterKey
        var logger = logger
        logger[metadataKey: "dynreg.database"] = "\(configuration.redactedDescription)"
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
        self.configuration = configuration
        self.logger = logger
        self.watchdog = Watchdog(timeout: configuration.leaseTimeout)
        self.loginCache = LoginCache(capacity: configuration.loginCacheCapacity)
        // Off until the listener has confirmed LISTEN.
        loginCache.disable()
        self.loginListener = LoginListener(cache: loginCache, configuration: configuration, logger: logger)
        self.registrations = CommitBatches(
            maximumBatch: configuration.registrationBatch, concurrency: configuration.registrationBatchesInFlight)
    }

    /// Whether logins may be answered from memory now: the listener hears every instance's device changes.
    package var isListeningForDeviceChanges: Bool { loginListener.isListening }

    /// The listener's connection's `application_name`, to find it in `pg_stat_activity`.
    package var loginListenerApplicationName: String { loginListener.applicationName }

    /// What a login would find in memory now, without reading the database.
    package func cachedLogin(productId: String, deviceName: String) -> Device? {
        loginCache.device(productId: productId, deviceName: deviceName)
    }

    /// Connects once (failing within `connectTimeout` with the server's reason) and applies pending migrations
    /// under an advisory lock, so instances starting together apply each once.
    package func migrate() async throws -> [String] {
        let connection = try await Self.connect(configuration, logger: logger)
        let applied: [String]
        do {
            applied = try await Migrations.run(on: connection, masterKey: masterKey, logger: logger)
        } catch let error as MasterKeyError {
            try? await connection.close()
            throw error
        } catch {
            try? await connection.close()
            throw StoreError(.unavailable, "cannot migrate the database: \(Self.reason(error))")
        }
        try? await connection.close()
        for name in applied { logger.info("applied database migration", metadata: ["dynreg.migration": "\(name)"]) }
        return applied
    }

    /// Runs the connection pool, the lease watchdog, the login listener and the registrations' group commit until
    /// graceful shutdown.
    package func run() async throws {
        watchdog.start()
        await withDiscardingTaskGroup { group in
            group.addTask { await client.run() }
            group.addTask { await registrations.run { batch in await self.commit(batch) } }
            group.addTask { [watchdog] in await cancelWhenGracefulShutdown { await watchdog.watch() } }
            if configuration.loginCacheCapacity > 0 {
                group.addTask { [loginListener] in await cancelWhenGracefulShutdown { await loginListener.run() } }
            }
        }
        watchdog.stop()
    }

    /// One connection outside the pool; `applicationName` names it in `pg_stat_activity`.
    static func connect(
        _ configuration: Configuration, applicationName: String? = nil, logger: Logger
    ) async throws -> PostgresConnection {
        let target = "PostgreSQL at \(configuration.redactedDescription)"
        var connectionConfiguration: PostgresConnection.Configuration
        do {
            connectionConfiguration = try configuration.connectionConfiguration()
            if let applicationName {
                connectionConfiguration.options.additionalStartupParameters.append(
                    ("application_name", applicationName))
            }
        } catch {
            throw StoreError(.unavailable, "cannot set up TLS for \(target)")
        }
        // postgres-nio's pool would retry a refused login for about a minute; one attempt says why at once.
        // The attempt is raced against a timer on its event loop rather than awaited: a server that accepts TCP
        // and never answers must not hold the start, even if the attempt ignores cancellation.
        let timeout = configuration.connectTimeout
        let eventLoop = PostgresConnection.defaultEventLoopGroup.any()
        let promise = eventLoop.makePromise(of: PostgresConnection.self)
        let decided = FirstOutcome()
        let timer = eventLoop.scheduleTask(in: .nanoseconds(Int64(timeout / .nanoseconds(1)))) {
            if decided.claim() { promise.fail(StoreError(.unavailable, "no answer from \(target) within \(timeout)")) }
        }
        PostgresConnection.connect(on: eventLoop, configuration: connectionConfiguration, id: 0, logger: logger)
            .whenComplete { result in
                timer.cancel()
                guard decided.claim() else {
                    if case .success(let late) = result { late.close().whenComplete { _ in } }
                    return
                }
                promise.completeWith(result)
            }
        do {
            return try await promise.futureResult.get()
        } catch let error as StoreError {
            throw error
        } catch {
            throw StoreError(.unavailable, "cannot connect to \(target): \(reason(error))")
        }
    }

    /// The server's message and SQLSTATE, or the network error; never the query or its values.
    static func reason(_ error: any Error) -> String {
        if let error = error as? PSQLError {
            if let message = error.serverInfo?[.message] {
                return "\(message) (SQLSTATE \(error.serverInfo?[.sqlState] ?? "?"))"
            }
            if let underlying = error.underlying { return "\(underlying)" }
            switch error.code {
            case .serverClosedConnection: return "the server closed the connection (is it PostgreSQL, reachable?)"
            case .sslUnsupported: return "the server does not offer TLS, which sslmode requires"
            default: return "\(error.code)"
            }
        }
        return "\(error)"
    }

    // MARK: Products

    package func createProduct(_ product: Product) async throws -> Product {
        let authority = product.certificateAuthority
        let sealedSecret = try masterKey.seal(product.secret, for: .productSecret(productId: product.id))
        return try await transaction { connection in
            let rows = try await connection.checkedQuery(
                """
                INSERT INTO products (id, name, auth_type, secret, dynamic_registration, auto_create, device_quota,
                    allow_clockless, device_count, created_at, ca_certificate, ca_sealed_key, ca_key_type,
                    certificate_validity_days, trusted_ca_certificates, topic_rules, device_key_type)
                VALUES (\(product.id), \(product.name), \(product.authType.rawValue), \(sealedSecret),
                    \(product.dynamicRegistration), \(product.autoCreate), \(product.deviceQuota),
                    \(product.allowClocklessDevices), 0, \(product.createdAt), \(authority?.certificatePEM),
                    \(authority?.sealedPrivateKey), \(authority?.keyType), \(authority?.certificateValidityDays),
                    \(StoreRows.trustedCertificatesColumn(product.trustedDeviceCAs)),
                    \(StoreRows.topicRulesColumn(product.topicPolicy)), \(StoreRows.deviceKeyTypeColumn(product.deviceKeyType)))
                ON CONFLICT (id) DO NOTHING
                RETURNING \(unescaped: Self.productColumns)
                """, logger: logger)
            guard let created = try await firstProduct(rows) else {
                throw StoreError.productExists(product.id)
            }
            return created
        }
    }

    package func products() async throws -> [Product] {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                "SELECT \(unescaped: Self.productColumns) FROM products ORDER BY created_at, id", logger: logger)
            var products: [Product] = []
            for try await row in rows { products.append(try product(from: row)) }
            return products
        }
    }

    package func product(id: String) async throws -> Product? {
        try await leased { connection in try await fetchProduct(connection, id: id, logger: logger) }
    }

    package func updateProduct(id: String, _ update: ProductUpdate) async throws -> Product {
        // Fields not named keep their current value; `.some(nil)` clears the quota.
        let setsQuota = update.deviceQuota != nil
        let quota = update.deviceQuota ?? nil
        let setsTrusted = update.trustedDeviceCAs != nil
        let trusted = update.trustedDeviceCAs.flatMap(StoreRows.trustedCertificatesColumn)
        let setsTopics = update.topicPolicy != nil
        let topics = update.topicPolicy.flatMap(StoreRows.topicRulesColumn)
        let setsKeyType = update.deviceKeyType != nil
        let keyType = update.deviceKeyType.flatMap(StoreRows.deviceKeyTypeColumn)
        return try await transaction { connection in
            let rows = try await connection.checkedQuery(
                """
                UPDATE products SET
                    name = COALESCE(\(update.name), name),
                    dynamic_registration = COALESCE(\(update.dynamicRegistration), dynamic_registration),
                    auto_create = COALESCE(\(update.autoCreate), auto_create),
                    device_quota = CASE WHEN \(setsQuota) THEN \(quota)::bigint ELSE device_quota END,
                    allow_clockless = COALESCE(\(update.allowClocklessDevices), allow_clockless),
                    trusted_ca_certificates =
                        CASE WHEN \(setsTrusted) THEN \(trusted)::text ELSE trusted_ca_certificates END,
                    topic_rules = CASE WHEN \(setsTopics) THEN \(topics)::text ELSE topic_rules END,
                    device_key_type = CASE WHEN \(setsKeyType) THEN \(keyType)::text ELSE device_key_type END
                WHERE id = \(id)
                RETURNING \(unescaped: Self.productColumns)
                """, logger: logger)
            guard let product = try await firstProduct(rows) else { throw StoreError.productNotFound(id) }
            return product
        }
    }

    package func rotateProductSecret(id: String, newSecret: String) async throws -> Product {
        let sealed = try masterKey.seal(newSecret, for: .productSecret(productId: id))
        return try await transaction { connection in
            let rows = try await connection.checkedQuery(
                "UPDATE products SET secret = \(sealed) WHERE id = \(id) RETURNING \(unescaped: Self.productColumns)",
                logger: logger)
            guard let product = try await firstProduct(rows) else { throw StoreError.productNotFound(id) }
            return product
        }
    }

    package func deleteProduct(id: String) async throws {
        // Its devices' notifications follow, but this instance's next login must not wait for them.
        defer { loginCache.invalidateAll() }
        try await transaction { connection in
            guard try await Self.lockProduct(connection, id: id, logger: logger) != nil else {
                throw StoreError.productNotFound(id)
            }
            try await connection.checkedQuery("DELETE FROM devices WHERE product_id = \(id)", logger: logger)
            try await connection.checkedQuery("DELETE FROM nonces WHERE product_id = \(id)", logger: logger)
            try await connection.checkedQuery("DELETE FROM certificates WHERE product_id = \(id)", logger: logger)
            try await connection.checkedQuery("DELETE FROM products WHERE id = \(id)", logger: logger)
        }
    }

    // MARK: Devices

    package func createDevice(productId: String, deviceName: String, now: Date) async throws -> Device {
        try await transaction { connection in
            guard let product = try await Self.lockProduct(connection, id: productId, logger: logger) else {
                throw StoreError.productNotFound(productId)
            }
            if try await fetchDevice(connection, productId: productId, name: deviceName, logger: logger) != nil {
                throw StoreError.deviceExists(productId, deviceName)
            }
            if let quota = product.quota, product.count >= quota {
                throw StoreError.quotaExceeded(productId, quota: quota)
            }
            return try await insertDevice(
                connection, productId: productId, name: deviceName, status: .created, psk: nil, now: now,
                registeredAt: nil, logger: logger)
        }
    }

    package func devices(productId: String, status: DeviceStatus?, limit: Int, after: String?) async throws -> [Device]
    {
        try await leased { connection in
            guard try await fetchProduct(connection, id: productId, logger: logger) != nil else {
                throw StoreError.productNotFound(productId)
            }
            // NULL parameters switch a filter off, so one statement serves every combination.
            let rows = try await connection.checkedQuery(
                """
                SELECT \(unescaped: Self.deviceColumns) FROM devices
                WHERE product_id = \(productId)
                    AND (\(status?.rawValue)::text IS NULL OR status = \(status?.rawValue))
                    AND (\(after)::text IS NULL OR name > \(after))
                ORDER BY name LIMIT \(limit < 0 ? nil : limit)  -- negative: no limit, as in SQLite
                """, logger: logger)
            var devices: [Device] = []
            for try await row in rows { devices.append(try device(from: row)) }
            return devices
        }
    }

    package func device(productId: String, deviceName: String) async throws -> Device? {
        try await leased { connection in
            try await fetchDevice(connection, productId: productId, name: deviceName, logger: logger)
        }
    }

    package func deviceForLogin(productId: String, deviceName: String) async throws -> Device? {
        try await loginCache.device(productId: productId, deviceName: deviceName) {
            try await device(productId: productId, deviceName: deviceName)
        }
    }

    // Each device write updates this instance's login cache as it commits, as SQLite's do; the notification it
    // sends tells the other instances (and, later, this one again).

    package func deleteDevice(productId: String, deviceName: String) async throws {
        try await loginCache.writing(productId: productId, deviceName: deviceName) {
            try await deleteDeviceRows(productId: productId, deviceName: deviceName)
            return ((), nil)
        }
    }

    private func deleteDeviceRows(productId: String, deviceName: String) async throws {
        try await transaction { connection in
            // The product first, as everywhere: device_count changes below.
            _ = try await Self.lockProduct(connection, id: productId, logger: logger)
            let deleted = try await connection.checkedQuery(
                "DELETE FROM devices WHERE product_id = \(productId) AND name = \(deviceName) RETURNING 1",
                logger: logger
            ).collect()
            guard !deleted.isEmpty else { throw StoreError.deviceNotFound(productId, deviceName) }
            try await connection.checkedQuery(
                "DELETE FROM nonces WHERE product_id = \(productId) AND device_name = \(deviceName)", logger: logger)
            try await Self.revokeActiveCertificates(
                connection, productId: productId, deviceName: deviceName, now: Date(), logger: logger)
            try await connection.checkedQuery(
                "UPDATE products SET device_count = device_count - 1 WHERE id = \(productId)", logger: logger)
        }
    }

    package func resetDevice(productId: String, deviceName: String) async throws -> Device {
        try await loginCache.writing(productId: productId, deviceName: deviceName) {
            let device = try await resetDeviceRow(productId: productId, deviceName: deviceName)
            return (device, device)
        }
    }

    private func resetDeviceRow(productId: String, deviceName: String) async throws -> Device {
        try await transaction { connection in
            let rows = try await connection.checkedQuery(
                """
                UPDATE devices SET status = 'created', psk = NULL, registered_at = NULL, activated_at = NULL
                WHERE product_id = \(productId) AND name = \(deviceName)
                RETURNING \(unescaped: Self.deviceColumns)
                """, logger: logger)
            guard let device = try await firstDevice(rows) else {
                throw StoreError.deviceNotFound(productId, deviceName)
            }
            try await Self.forgetClocklessNonces(connection, productId, deviceName, logger)
            try await Self.revokeActiveCertificates(
                connection, productId: productId, deviceName: deviceName, now: Date(), logger: logger)
            return device
        }
    }

    package func activateDevice(productId: String, deviceName: String, now: Date) async throws -> Device {
        try await loginCache.writing(productId: productId, deviceName: deviceName) {
            let device = try await activateDeviceRow(productId: productId, deviceName: deviceName, now: now)
            return (device, device)
        }
    }

    private func activateDeviceRow(productId: String, deviceName: String, now: Date) async throws -> Device {
        try await transaction { connection in
            guard
                let device = try await fetchDevice(
                    connection, productId: productId, name: deviceName, forUpdate: true, logger: logger)
            else { throw StoreError.deviceNotFound(productId, deviceName) }
            if device.status == .activated { return device }
            let rows = try await connection.checkedQuery(
                """
                UPDATE devices SET status = 'activated', activated_at = \(now)
                WHERE product_id = \(productId) AND name = \(deviceName)
                RETURNING \(unescaped: Self.deviceColumns)
                """, logger: logger)
            guard let activated = try await firstDevice(rows) else {
                throw StoreError.deviceNotFound(productId, deviceName)
            }
            // Clockless devices' nonces were kept until activation: registration is now refused anyway.
            try await Self.forgetClocklessNonces(connection, productId, deviceName, logger)
            return activated
        }
    }

    // MARK: Registration

    /// Registrations go through the instance's group commit (``CommitBatches``): attempts that arrive
    /// together share one transaction and one call of `dynreg_register_batch` (migration v9), so a product's row
    /// lock, which keeps the quota exact across instances, is taken once per batch rather than once per new
    /// device. Each attempt is decided by `dynreg_register_repeatable` (v5), which mirrors
    /// `RegistrationRules.decide`, and answered only after the batch's `COMMIT` returned.
    package func register(_ attempt: RegistrationAttempt) async throws -> RegistrationDecision {
        // Sealed here, in the caller's task: one AES-GCM operation that no batch waits for.
        let pending = try PendingRegistration(attempt, masterKey: masterKey)
        return try await loginCache.writing(productId: attempt.productId, deviceName: attempt.deviceName) {
            let decision = try await registrations.submit(pending)
            // The device's first login finds its new psk in memory.
            guard case .issued(let device, _) = decision else { return (decision, nil) }
            return (decision, device)
        }
    }

    /// One batch as ``register(_:)`` commits it, the attempts in this order: one answer per attempt, in order.
    /// Tests use it to make batches of their choosing.
    package func register(batch attempts: [RegistrationAttempt]) async -> [Result<RegistrationDecision, any Error>] {
        var pending: [PendingRegistration] = []
        for attempt in attempts {
            do {
                pending.append(try PendingRegistration(attempt, masterKey: masterKey))
            } catch {
                return attempts.map { _ in .failure(error) }
            }
        }
        return await commit(pending)
    }

    /// An attempt ready for the database: its psk sealed as the row keeps it, its audit event made.
    struct PendingRegistration: Sendable {
        var attempt: RegistrationAttempt
        var sealedPSK: String?
        var event: RegistrationEvent
        var certificate: DeviceCertificate?

        init(_ attempt: RegistrationAttempt, masterKey: MasterKey) throws {
            self.attempt = attempt
            // The device this answers gets the attempt's own psk, with no second AES-GCM.
            sealedPSK = try attempt.credential.psk.map {
                try masterKey.seal($0, for: .psk(productId: attempt.productId, deviceName: attempt.deviceName))
            }
            event = attempt.event(for: .rejected(.internalError))
            if case .certificate(let issued) = attempt.credential { certificate = issued }
        }
    }

    /// Commits `batch` in one transaction; when the database refused it (one attempt's own error, say, rolls
    /// back everyone's work), each attempt again in a transaction of its own, so only that one fails. A failure
    /// whose outcome is unknown (the connection lost during `COMMIT`) is every attempt's error: retrying could
    /// answer a committed registration with a replay refusal.
    private func commit(_ batch: [PendingRegistration]) async -> [Result<RegistrationDecision, any Error>] {
        let started = ContinuousClock.now
        do {
            let decisions = try await registerInOneTransaction(batch)
            metrics.committed(size: batch.count, elapsed: ContinuousClock.now - started)
            return decisions.map { .success($0) }
        } catch {
            metrics.committed(size: batch.count, elapsed: ContinuousClock.now - started)
            guard batch.count > 1, Self.rolledBack(error) else { return batch.map { _ in .failure(error) } }
            logger.debug(
                "registering a refused batch one by one",
                metadata: ["dynreg.sqlstate": "\((error as? PSQLError)?.serverInfo?[.sqlState] ?? "")"])
            return await withTaskGroup(of: (Int, Result<RegistrationDecision, any Error>).self) { group in
                for (index, pending) in batch.enumerated() {
                    group.addTask {
                        let started = ContinuousClock.now
                        defer { metrics.committed(size: 1, elapsed: ContinuousClock.now - started) }
                        do {
                            return (index, .success(try await registerInOneTransaction([pending])[0]))
                        } catch {
                            return (index, .failure(error))
                        }
                    }
                }
                var results = [Result<RegistrationDecision, any Error>?](repeating: nil, count: batch.count)
                for await (index, result) in group { results[index] = result }
                return results.map { $0! }
            }
        }
    }

    /// Whether PostgreSQL answered the error itself, so the transaction it ended is certainly rolled back.
    private static func rolledBack(_ error: any Error) -> Bool {
        (error as? PSQLError)?.serverInfo?[.sqlState] != nil
    }

    /// One transaction, one call of `dynreg_register_batch`: the decisions in the attempts' order. In an explicit
    /// transaction: in autocommit, PostgreSQL sends the rows before it commits, and postgres-nio would not report
    /// a failure of that commit (a serialization failure, a deferred constraint) to this call.
    private func registerInOneTransaction(_ batch: [PendingRegistration]) async throws -> [RegistrationDecision] {
        let attempts = batch.map(\.attempt)
        let query: PostgresQuery = """
            SELECT b_attempt, b_outcome, b_status, b_created_at, b_registered_at, b_activated_at,
                b_registration_count, b_created, b_answer_length, b_answer_payload
            FROM dynreg_register_batch(
                \(attempts.map(\.productId)), \(attempts.map(\.deviceName)), \(attempts.map(\.timestamp)),
                \(attempts.map(\.nonce)), \(NullableArray(attempts.map(\.replayExpiry))),
                \(NullableArray(batch.map(\.sealedPSK))), \(attempts.map(\.now)),
                \(NullableArray(batch.map(\.certificate?.serial))),
                \(NullableArray(batch.map(\.certificate?.fingerprint))),
                \(NullableArray(batch.map(\.certificate?.pem))),
                \(NullableArray(batch.map(\.certificate?.notBefore))),
                \(NullableArray(batch.map(\.certificate?.notAfter))),
                \(batch.map(\.event.productId)), \(batch.map(\.event.deviceName)),
                \(batch.map(\.event.remoteAddress)), \(batch.map(\.event.endpoint)),
                \(NullableArray(attempts.map { $0.repeatable.map { ByteBuffer(bytes: $0.digest) } })),
                \(NullableArray(attempts.map(\.repeatable?.payload.length))),
                \(NullableArray(attempts.map(\.repeatable?.payload.payload))))
            """
        let logger = self.logger
        let masterKey = self.masterKey
        return try await transaction { connection in
            let rows = try await connection.checkedQuery(query, logger: logger)
            var decisions = [RegistrationDecision?](repeating: nil, count: batch.count)
            for try await row in rows {
                let (index, symbol, status, createdAt, registeredAt, activatedAt, count, created, length, payload) =
                    try row.decode(
                        (Int, String, String?, Date?, Date?, Date?, Int?, Bool?, Int?, String?).self)
                guard decisions.indices.contains(index - 1), decisions[index - 1] == nil else {
                    throw StoreError(.unavailable, "dynreg_register_batch answered an attempt it was not given")
                }
                let attempt = attempts[index - 1]
                switch RegistrationRules.Outcome(symbol: symbol) {
                case .refuse(let code):
                    decisions[index - 1] = .rejected(code)
                case .issue:
                    guard let status, let createdAt, let count, let created else {
                        throw StoreError.corruptRow(
                            table: "devices", key: "\(attempt.productId)/\(attempt.deviceName)", column: "*")
                    }
                    var device = try StoreRows.device(
                        productId: attempt.productId, name: attempt.deviceName, status: status, sealedPSK: nil,
                        createdAt: createdAt, registeredAt: registeredAt, activatedAt: activatedAt,
                        registrationCount: count, masterKey: masterKey)
                    device.psk = attempt.credential.psk
                    decisions[index - 1] = .issued(device, created: created)
                case .repeatAnswer:
                    guard let created, let length, let payload else {
                        throw StoreError.corruptRow(
                            table: "nonces", key: "\(attempt.productId)/\(attempt.deviceName)", column: "answer_*")
                    }
                    decisions[index - 1] = .repeated(
                        RegistrationAnswer(
                            payload: EncryptedPayload(length: length, payload: payload), created: created))
                case nil:
                    throw StoreError(.unavailable, "dynreg_register answered an outcome this server does not know")
                }
            }
            // Checked before COMMIT: a batch answered in part is rolled back whole.
            let complete = decisions.compactMap { $0 }
            guard complete.count == batch.count else {
                throw StoreError(.unavailable, "dynreg_register_batch left an attempt without a decision")
            }
            return complete
        }
    }

    // Writes run in explicit transactions even when they are one statement: in autocommit PostgreSQL commits
    // after the statement's CommandComplete, and postgres-nio would not report a failure of that commit.
    package func purgeExpiredNonces(now: Date) async throws -> Int {
        try await transaction { connection in
            let rows = try await connection.checkedQuery(
                "DELETE FROM nonces WHERE expires_at IS NOT NULL AND expires_at < \(now) RETURNING 1", logger: logger)
            var count = 0
            for try await _ in rows { count += 1 }
            return count
        }
    }

    // MARK: Certificates

    package func certificates(
        productId: String, deviceName: String, limit: Int, after: String?
    ) async throws -> [DeviceCertificate] {
        let after = after?.lowercased()
        return try await leased { connection in
            guard try await fetchDevice(connection, productId: productId, name: deviceName, logger: logger) != nil
            else { throw StoreError.deviceNotFound(productId, deviceName) }
            return try await Self.certificates(
                connection.checkedQuery(
                    """
                    SELECT \(unescaped: Self.certificateColumns) FROM certificates
                    WHERE product_id = \(productId) AND device_name = \(deviceName)
                        AND (\(after)::text IS NULL OR (issued_at, serial) < (
                            SELECT issued_at, serial FROM certificates WHERE product_id = \(productId) AND serial = \(after)))
                    ORDER BY issued_at DESC, serial DESC LIMIT \(limit)
                    """, logger: logger))
        }
    }

    package func revokeCertificate(productId: String, serial: String, now: Date) async throws -> DeviceCertificate {
        let serial = serial.lowercased()
        return try await transaction { connection in
            try await connection.checkedQuery(
                """
                UPDATE certificates SET revoked_at = \(now)
                WHERE product_id = \(productId) AND serial = \(serial) AND revoked_at IS NULL
                """, logger: logger)
            let rows = try await connection.checkedQuery(
                """
                SELECT \(unescaped: Self.certificateColumns) FROM certificates
                WHERE product_id = \(productId) AND serial = \(serial)
                """, logger: logger)
            guard let certificate = try await Self.certificates(rows).first else {
                throw StoreError.certificateNotFound(productId, serial: serial)
            }
            return certificate
        }
    }

    package func revokedCertificates(productId: String) async throws -> [DeviceCertificate] {
        try await leased { connection in
            try await Self.certificates(
                connection.checkedQuery(
                    """
                    SELECT \(unescaped: Self.certificateColumns) FROM certificates
                    WHERE product_id = \(productId) AND revoked_at IS NOT NULL ORDER BY revoked_at
                    """, logger: logger))
        }
    }

    package func certificate(fingerprint: String) async throws -> DeviceCertificate? {
        let fingerprint = fingerprint.lowercased()
        return try await leased { connection in
            try await Self.certificates(
                connection.checkedQuery(
                    """
                    SELECT \(unescaped: Self.certificateColumns) FROM certificates WHERE fingerprint = \(fingerprint)
                    """, logger: logger)
            ).first
        }
    }

    /// A clockless device's nonces never expire; a reset or an activation ends what they guard.
    private static func forgetClocklessNonces(
        _ connection: PostgresConnection, _ productId: String, _ deviceName: String, _ logger: Logger
    ) async throws {
        try await connection.checkedQuery(
            """
            DELETE FROM nonces WHERE product_id = \(productId) AND device_name = \(deviceName)
                AND expires_at IS NULL
            """, logger: logger)
    }

    private static func revokeActiveCertificates(
        _ connection: PostgresConnection, productId: String, deviceName: String, now: Date, logger: Logger
    ) async throws {
        try await connection.checkedQuery(
            """
            UPDATE certificates SET revoked_at = \(now)
            WHERE product_id = \(productId) AND device_name = \(deviceName) AND revoked_at IS NULL
            """, logger: logger)
    }

    // MARK: Audit log

    package func recordEvent(_ event: RegistrationEvent) async throws {
        try await transaction { connection in try await Self.insertEvent(connection, event, logger: logger) }
    }

    private static func insertEvent(
        _ connection: PostgresConnection, _ event: RegistrationEvent, logger: Logger
    )
        async throws
    {
        _ = try await connection.checkedQuery(
            """
            INSERT INTO events (time, product_id, device_name, outcome, remote_address, endpoint)
            VALUES (\(event.time), \(event.productId), \(event.deviceName), \(event.outcome),
                \(event.remoteAddress), \(event.endpoint))
            """, logger: logger)
    }

    package func events(productId: String?, _ query: EventQuery) async throws -> [RegistrationEvent] {
        try await leased { connection in
            let rows: PostgresRowSequence
            if let productId {
                rows = try await connection.checkedQuery(
                    """
                    SELECT id, time, product_id, device_name, outcome, remote_address, endpoint FROM events
                    WHERE product_id = \(productId) AND (\(query.before)::bigint IS NULL OR id < \(query.before))
                        AND (\(query.since)::timestamptz IS NULL OR time >= \(query.since))
                        AND (\(query.outcome)::text IS NULL OR outcome = \(query.outcome))
                        AND (\(query.deviceName)::text IS NULL OR device_name = \(query.deviceName))
                    ORDER BY id DESC LIMIT \(query.limit)
                    """, logger: logger)
            } else {
                // Every product: the primary key backwards, the newest `scanLimit` at most.
                let scanLimit = query.scanLimit.map(Int64.init)
                rows = try await connection.checkedQuery(
                    """
                    SELECT id, time, product_id, device_name, outcome, remote_address, endpoint FROM events
                    WHERE (\(scanLimit)::bigint IS NULL OR id > (SELECT max(id) FROM events) - \(scanLimit))
                        AND (\(query.before)::bigint IS NULL OR id < \(query.before))
                        AND (\(query.since)::timestamptz IS NULL OR time >= \(query.since))
                        AND (\(query.outcome)::text IS NULL OR outcome = \(query.outcome))
                        AND (\(query.deviceName)::text IS NULL OR device_name = \(query.deviceName))
                    ORDER BY id DESC LIMIT \(query.limit)
                    """, logger: logger)
            }
            var events: [RegistrationEvent] = []
            for try await row in rows {
                let (id, time, product, device, outcome, address, endpoint) = try row.decode(
                    (Int64, Date, String, String, String, String, String).self)
                events.append(
                    RegistrationEvent(
                        id: id, time: time, productId: product, deviceName: device, outcome: outcome,
                        remoteAddress: address, endpoint: endpoint))
            }
            return events
        }
    }

    package func registrationsPerMinute(since: Date) async throws -> [OutcomeMinute] {
        let boundary = since.addingTimeInterval(-eventClockSlack)
        return try await leased { connection in
            // The boundary is the newest event older than `since` minus the slack (the primary key backwards); the
            // count reads the key's range after it.
            let rows = try await connection.checkedQuery(
                """
                SELECT floor(extract(epoch FROM time) / 60)::bigint AS minute, outcome, count(*)::bigint FROM events
                WHERE id > COALESCE((SELECT id FROM events WHERE time < \(boundary) ORDER BY id DESC LIMIT 1), 0)
                    AND time >= \(since) AND substr(outcome, 1, 6) <> 'Admin.'
                GROUP BY 1, 2 ORDER BY 1, 2
                """, logger: logger)
            var counts: [OutcomeMinute] = []
            for try await (minute, outcome, count) in rows.decode((Int64, String, Int64).self) {
                counts.append(
                    OutcomeMinute(
                        minute: Date(timeIntervalSince1970: TimeInterval(minute) * 60), outcome: outcome,
                        count: Int(count)))
            }
            return counts
        }
    }

    package func purgeAudit(before: Date) async throws -> AuditPurge {
        var purge = AuditPurge()
        while true {
            let removed = try await leased { connection in
                try await connection.checkedQuery(
                    """
                    DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT 5000) AND time < \(before)
                    RETURNING 1
                    """, logger: logger
                ).collect().count
            }
            purge.events += removed
            if removed < 5000 { break }
        }
        purge.refusals = try await leased { connection in
            try await connection.checkedQuery(
                "DELETE FROM lockouts WHERE locked_until < \(before)", logger: logger)
            return try await connection.checkedQuery(
                "DELETE FROM refusals WHERE minute < \(Int64(before.timeIntervalSince1970)) RETURNING 1",
                logger: logger
            ).collect().count
        }
        return purge
    }

    package func recordRefusals(_ counts: [RefusalCount]) async throws {
        guard !counts.isEmpty else { return }
        let logger = self.logger
        // One statement for the lot: several instances add to the same rows, and the database adds up.
        let minutes = counts.map { Int64($0.minute.timeIntervalSince1970) }
        try await leased { connection in
            _ = try await connection.checkedQuery(
                """
                INSERT INTO refusals (minute, product_id, endpoint, outcome, remote_address, count)
                SELECT * FROM unnest(\(minutes), \(counts.map(\.productId)), \(counts.map(\.endpoint)),
                    \(counts.map(\.outcome)), \(counts.map(\.remoteAddress)), \(counts.map { Int64($0.count) }))
                ON CONFLICT (minute, product_id, endpoint, outcome, remote_address)
                DO UPDATE SET count = refusals.count + excluded.count
                """, logger: logger
            ).collect()
        }
    }

    package func refusals(productId: String?, limit: Int) async throws -> [RefusalCount] {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                """
                SELECT minute, product_id, endpoint, outcome, remote_address, count FROM refusals
                WHERE \(productId)::text IS NULL OR product_id = \(productId) ORDER BY minute DESC LIMIT \(limit)
                """, logger: logger)
            var counts: [RefusalCount] = []
            for try await (minute, product, endpoint, outcome, address, count) in rows.decode(
                (Int64, String, String, String, String, Int64).self)
            {
                counts.append(
                    RefusalCount(
                        minute: Date(timeIntervalSince1970: TimeInterval(minute)), productId: product,
                        endpoint: endpoint, outcome: outcome, remoteAddress: address, count: Int(count)))
            }
            return counts
        }
    }

    package func limits(productId: String) async throws -> ProductLimits {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                "SELECT limits FROM product_limits WHERE product_id = \(productId)", logger: logger)
            for try await (text) in rows.decode(String.self) {
                return try StoreRows.limits(text, productId: productId)
            }
            return ProductLimits()
        }
    }

    package func setLimits(productId: String, _ limits: ProductLimits) async throws {
        try await leased { connection in
            let written = try await connection.checkedQuery(
                """
                INSERT INTO product_limits (product_id, limits)
                SELECT id, \(StoreRows.limitsColumn(limits)) FROM products WHERE id = \(productId)
                ON CONFLICT (product_id) DO UPDATE SET limits = excluded.limits
                RETURNING 1
                """, logger: logger
            ).collect()
            guard !written.isEmpty else { throw StoreError.productNotFound(productId) }
        }
    }

    package func devicesCreated(productId: String, since: Date) async throws -> Int {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                "SELECT COUNT(*) FROM devices WHERE product_id = \(productId) AND created_at >= \(since)",
                logger: logger)
            for try await count in rows.decode(Int.self) { return count }
            return 0
        }
    }

    package func recordLockout(_ lockout: Lockout) async throws {
        try await leased { connection in
            _ = try await connection.checkedQuery(
                """
                INSERT INTO lockouts (product_id, remote_address, failures, locked_at, locked_until)
                SELECT id, \(lockout.remoteAddress), \(lockout.failures), \(lockout.lockedAt), \(lockout.lockedUntil)
                FROM products WHERE id = \(lockout.productId)
                ON CONFLICT (product_id, remote_address) DO UPDATE SET failures = excluded.failures,
                    locked_at = excluded.locked_at, locked_until = excluded.locked_until
                """, logger: logger
            ).collect()
        }
    }

    package func lockouts(productId: String?, endingAfter now: Date) async throws -> [Lockout] {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                """
                SELECT product_id, remote_address, failures, locked_at, locked_until FROM lockouts
                WHERE locked_until > \(now) AND (\(productId)::text IS NULL OR product_id = \(productId))
                ORDER BY locked_at DESC
                """, logger: logger)
            var lockouts: [Lockout] = []
            for try await (product, address, failures, lockedAt, lockedUntil) in rows.decode(
                (String, String, Int, Date, Date).self)
            {
                lockouts.append(
                    Lockout(
                        productId: product, remoteAddress: address, failures: failures, lockedAt: lockedAt,
                        lockedUntil: lockedUntil))
            }
            return lockouts
        }
    }

    package func clearLockout(productId: String, remoteAddress: String, now: Date) async throws -> Bool {
        try await leased { connection in
            let ended = try await connection.checkedQuery(
                """
                UPDATE lockouts SET locked_until = \(now)
                WHERE product_id = \(productId) AND remote_address = \(remoteAddress) AND locked_until > \(now)
                RETURNING 1
                """, logger: logger
            ).collect()
            return !ended.isEmpty
        }
    }

    package func refusalTotals(outcome: String, since: Date, atLeast: Int) async throws -> [RefusalCount] {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                """
                SELECT product_id, remote_address, MIN(minute), SUM(count)::bigint FROM refusals
                WHERE minute >= \(Int64(since.timeIntervalSince1970)) AND outcome = \(outcome) AND product_id <> ''
                GROUP BY product_id, remote_address HAVING SUM(count) >= \(atLeast)
                """, logger: logger)
            var totals: [RefusalCount] = []
            for try await (product, address, first, total) in rows.decode((String, String, Int64, Int64).self) {
                totals.append(
                    RefusalCount(
                        minute: Date(timeIntervalSince1970: TimeInterval(first)), productId: product, endpoint: "",
                        outcome: outcome, remoteAddress: address, count: Int(total)))
            }
            return totals
        }
    }

    package func deviceCounts() async throws -> [DeviceStatus: Int] {
        try await leased { connection in
            let rows = try await connection.checkedQuery(
                "SELECT status, COUNT(*) FROM devices GROUP BY status", logger: logger)
            var counts: [DeviceStatus: Int] = [:]
            for try await (status, count) in rows.decode((String, Int).self) {
                if let status = DeviceStatus(rawValue: status) { counts[status] = count }
            }
            return counts
        }
    }

    // MARK: Master key

    package func rotateMasterKey(
        to newKey: MasterKey, progress: @escaping @Sendable (SecretRewriteProgress) -> Void
    ) async throws -> SecretRewriteProgress {
        defer { loginCache.invalidateAll() }
        let rewrite = SecretRewrite.rotation(from: masterKey, to: newKey)
        return try await transaction { connection in
            // The lock migrations take: an instance starting now waits, then finds the secrets under the new key.
            try await connection.checkedQuery(
                "SELECT pg_advisory_xact_lock(\(Migrations.advisoryLockKey))", logger: logger)
            return try await Migrations.rewriteSecrets(connection, rewrite, progress: progress, logger: logger)
        }
    }

    package func checkHealth() async throws {
        try await leased { connection in
            _ = try await connection.checkedQuery("SELECT 1", logger: logger).collect()
        }
    }

    // MARK: Connections and transactions

    /// Runs `body` on a pooled connection, in a child task, so that the caller can be answered when the
    /// database cannot: after `leaseTimeout` without a connection for anyone (the store's watchdog decides), instead
    /// of after the pool's minute of retries. A busy pool, still handing out connections, is waited for.
    ///
    /// postgres-nio never answers a query written to a closed connection, so every statement checks the connection
    /// first (`checkedQuery`).
    private func leased<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    ) async throws
        -> T
    {
        let outcome = LeaseOutcome<T>()
        let timeout = configuration.leaseTimeout
        guard
            let id = watchdog.begin({
                outcome.deliver(.failure(StoreError(.unavailable, "no database connection within \(timeout)")))
            })
        else { throw StoreError.stopped }
        let client = self.client
        let watchdog = self.watchdog
        return try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask {
                do {
                    let value = try await client.withConnection { connection in
                        // The watchdog answered already: nobody waits for this work.
                        guard watchdog.leased(id) else { throw CancellationError() }
                        return try await body(connection)
                    }
                    outcome.deliver(.success(value))
                } catch {
                    watchdog.ended(id)
                    outcome.deliver(.failure(error))
                }
            }
            let result = await outcome.result()
            // Answered by the watchdog: stop the child's wait for a connection.
            group.cancelAll()
            return try result.get()
        }
    }

    /// One transaction; `body`'s errors roll it back and surface unchanged. Rejections commit nothing to undo.
    /// A deadlock or serialization failure (which the lock order should prevent) is retried.
    private func transaction<T: Sendable>(
        _ body: @escaping @Sendable (PostgresConnection) async throws -> T
    )
        async throws -> T
    {
        let logger = self.logger
        return try await retrying {
            try await self.leased { connection in
                try await connection.checkedQuery("BEGIN", logger: logger)
                let value: T
                do {
                    value = try await body(connection)
                } catch {
                    _ = try? await connection.checkedQuery("ROLLBACK", logger: logger)
                    throw error
                }
                // Only a COMMIT that returns means durable: a registration is acknowledged after this line.
                try await connection.checkedQuery("COMMIT", logger: logger)
                return value
            }
        }
    }

    /// Runs `body` again, up to three times in all, when PostgreSQL aborted it for a deadlock or a
    /// serialization failure: nothing of an aborted transaction remains.
    private func retrying<T: Sendable>(_ body: () async throws -> T) async throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            do {
                return try await body()
            } catch let error as PSQLError where attempt < 3 && Self.isRetryable(error) {
                logger.debug(
                    "retrying a transaction", metadata: ["dynreg.sqlstate": "\(error.serverInfo?[.sqlState] ?? "")"])
            }
        }
    }

    private static func isRetryable(_ error: PSQLError) -> Bool {
        guard let state = error.serverInfo?[.sqlState] else { return false }
        return state == "40001" || state == "40P01"
    }

    // MARK: Rows

    private static let productColumns = """
        id, name, auth_type, secret, dynamic_registration, auto_create, device_quota, allow_clockless, device_count,
        created_at, ca_certificate, ca_sealed_key, ca_key_type, certificate_validity_days, trusted_ca_certificates,
        topic_rules, device_key_type
        """
    private static let certificateColumns =
        "serial, product_id, device_name, fingerprint, pem, not_before, not_after, issued_at, revoked_at"
    private static let deviceColumns =
        "product_id, name, status, psk, created_at, registered_at, activated_at, registration_count"

    private struct LockedProduct {
        var autoCreate: Bool
        var quota: Int?
        var count: Int
    }

    /// Locks the product row for the rest of the transaction: the first lock any writer of devices takes.
    private static func lockProduct(
        _ connection: PostgresConnection, id: String, logger: Logger
    ) async throws
        -> LockedProduct?
    {
        let rows = try await connection.checkedQuery(
            "SELECT auto_create, device_quota, device_count FROM products WHERE id = \(id) FOR NO KEY UPDATE",
            logger: logger)
        var locked: LockedProduct?
        for try await row in rows {
            let (autoCreate, quota, count) = try row.decode((Bool, Int?, Int).self)
            locked = LockedProduct(autoCreate: autoCreate, quota: quota, count: count)
        }
        return locked
    }

    private func insertDevice(
        _ connection: PostgresConnection, productId: String, name: String, status: DeviceStatus, psk: String?,
        now: Date, registeredAt: Date?, logger: Logger
    ) async throws -> Device {
        // One round trip for both: the product row stays locked until COMMIT, so every one counts.
        let rows = try await connection.checkedQuery(
            """
            WITH inserted AS (
                INSERT INTO devices (product_id, name, status, psk, created_at, registered_at, registration_count)
                VALUES (\(productId), \(name), \(status.rawValue), \(psk), \(now), \(registeredAt),
                    \(registeredAt == nil ? 0 : 1))
                RETURNING \(unescaped: Self.deviceColumns)
            ), counted AS (
                UPDATE products SET device_count = device_count + 1 WHERE id = \(productId)
            )
            SELECT * FROM inserted
            """, logger: logger)
        guard let device = try await firstDevice(rows) else { throw StoreError.deviceNotFound(productId, name) }
        return device
    }

    private func fetchProduct(
        _ connection: PostgresConnection, id: String, logger: Logger
    ) async throws
        -> Product?
    {
        try await firstProduct(
            connection.checkedQuery(
                "SELECT \(unescaped: Self.productColumns) FROM products WHERE id = \(id)", logger: logger))
    }

    private func fetchDevice(
        _ connection: PostgresConnection, productId: String, name: String, forUpdate: Bool = false, logger: Logger
    ) async throws -> Device? {
        try await firstDevice(
            connection.checkedQuery(
                """
                SELECT \(unescaped: Self.deviceColumns) FROM devices WHERE product_id = \(productId) AND name = \(name)
                \(unescaped: forUpdate ? "FOR UPDATE" : "")
                """, logger: logger))
    }

    private func firstProduct(_ rows: PostgresRowSequence) async throws -> Product? {
        var first: Product?
        for try await row in rows where first == nil { first = try product(from: row) }
        return first
    }

    private func firstDevice(_ rows: PostgresRowSequence) async throws -> Device? {
        var first: Device?
        for try await row in rows where first == nil { first = try device(from: row) }
        return first
    }

    private func product(from row: PostgresRow) throws -> Product {
        let (
            id, name, authType, secret, dynamicRegistration, autoCreate, quota, allowClockless, count, createdAt,
            caCertificate, caSealedKey, caKeyType, validityDays, trusted, topicRules, deviceKeyType
        ) = try row.decode(
            (
                String, String, String, String, Bool, Bool, Int?, Bool, Int, Date, String?, String?, String?, Int?,
                String?, String?, String?
            )
            .self)
        return try StoreRows.product(
            id: id, name: name, authType: authType, sealedSecret: secret, dynamicRegistration: dynamicRegistration,
            autoCreate: autoCreate, deviceQuota: quota, allowClocklessDevices: allowClockless, deviceCount: count,
            createdAt: createdAt, caCertificate: caCertificate, caSealedKey: caSealedKey, caKeyType: caKeyType,
            certificateValidityDays: validityDays, trustedCACertificates: trusted, topicRules: topicRules,
            deviceKeyType: deviceKeyType, masterKey: masterKey)
    }

    private static func certificates(_ rows: PostgresRowSequence) async throws -> [DeviceCertificate] {
        var certificates: [DeviceCertificate] = []
        for try await row in rows {
            let (serial, productId, deviceName, fingerprint, pem, notBefore, notAfter, issuedAt, revokedAt) =
                try row.decode((String, String, String, String, String, Date, Date, Date, Date?).self)
            certificates.append(
                DeviceCertificate(
                    serial: serial, productId: productId, deviceName: deviceName, fingerprint: fingerprint, pem: pem,
                    notBefore: notBefore, notAfter: notAfter, issuedAt: issuedAt, revokedAt: revokedAt))
        }
        return certificates
    }

    private func device(from row: PostgresRow) throws -> Device {
        let (productId, name, status, psk, createdAt, registeredAt, activatedAt, count) = try row.decode(
            (String, String, String, String?, Date, Date?, Date?, Int).self)
        return try StoreRows.device(
            productId: productId, name: name, status: status, sealedPSK: psk, createdAt: createdAt,
            registeredAt: registeredAt, activatedAt: activatedAt, registrationCount: count, masterKey: masterKey)
    }
}

extension PostgresConnection {
    /// `query`, refusing a connection that has closed: postgres-nio drops a query written to one without ever
    /// answering it, which would hold the caller forever.
    @discardableResult
    func checkedQuery(_ query: PostgresQuery, logger: Logger) async throws -> PostgresRowSequence {
        guard !isClosed else { throw StoreError(.unavailable, "the database connection closed") }
        return try await self.query(query, logger: logger)
    }
}

/// The store's one lease watchdog: the state machine, and the loop that ticks it while the store runs.
private final class Watchdog: Sendable {
    private let state: Mutex<LeaseWatchdog<@Sendable () -> Void>>

    init(timeout: Duration) {
        state = Mutex(LeaseWatchdog(timeout: timeout, now: .now))
    }

    func begin(_ fail: @escaping @Sendable () -> Void) -> LeaseWatchdog<@Sendable () -> Void>.OperationID? {
        state.withLock { $0.begin(fail, now: .now) }
    }

    func leased(_ id: LeaseWatchdog<@Sendable () -> Void>.OperationID) -> Bool {
        state.withLock { $0.leased(id, now: .now) }
    }

    func ended(_ id: LeaseWatchdog<@Sendable () -> Void>.OperationID) {
        state.withLock { $0.ended(id) }
    }

    func start() {
        state.withLock { $0.start(now: .now) }
    }

    func stop() {
        for fail in state.withLock({ $0.stop() }) { fail() }
    }

    /// Ticks until cancelled.
    func watch() async {
        while true {
            let tick = state.withLock { $0.tick(now: .now) }
            for fail in tick.expired { fail() }
            do {
                try await Task.sleep(until: tick.next, clock: .continuous)
            } catch {
                return
            }
        }
    }
}

/// One operation's answer, delivered once: by its work or by the watchdog, whichever comes first.
private final class LeaseOutcome<T: Sendable>: Sendable {
    private struct State {
        var result: Result<T, any Error>?
        var continuation: CheckedContinuation<Result<T, any Error>, Never>?
    }

    private let state = Mutex(State())

    func deliver(_ outcome: Result<T, any Error>) {
        let waiter = state.withLock { state -> CheckedContinuation<Result<T, any Error>, Never>? in
            guard state.result == nil else { return nil }
            state.result = outcome
            defer { state.continuation = nil }
            return state.continuation
        }
        waiter?.resume(returning: outcome)
    }

    func result() async -> Result<T, any Error> {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> Result<T, any Error>? in
                if state.result == nil { state.continuation = continuation }
                return state.result
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}

/// Which of two racing callbacks came first.
private final class FirstOutcome: Sendable {
    private let claimed = Mutex(false)

    func claim() -> Bool {
        claimed.withLock { claimed in
            defer { claimed = true }
            return !claimed
        }
    }
}
