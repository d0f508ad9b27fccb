import DynRegProtocol
public import DynRegStore
public import Foundation
public import Logging
import PostgresNIO
public import ServiceLifecycle

/// The store on PostgreSQL, for several server instances sharing one database.
///
/// Everything that must hold across instances is decided by the database: uniqueness, quotas (a new device's
/// registration locks its product row, which holds the count), the replay cache and activation. A transaction that
/// takes both locks takes the product row before the device row, and none asks for the product while holding a
/// device, so they cannot deadlock one another.
///
/// It is a `Service`: `run()` runs the connection pool, in a `ServiceGroup` or a task; until it runs, every
/// operation fails with `unavailable` after `leaseTimeout`.
/// Values always travel as bound parameters: `\(value)` inside a `PostgresQuery` literal becomes `$n`.
public struct PostgresStore: RegistrationStore, Service {
    private let client: PostgresClient
    private let logger: Logger
    private let leaseTimeout: Duration
    private let progress = LeaseProgress()

    /// Connects once (failing within `connectTimeout` with the server's reason), applies pending migrations,
    /// and prepares the pool, which starts with ``run()``.
    public init(configuration: Configuration, logger: Logger) async throws {
        var logger = logger
        logger[metadataKey: "dynreg.database"] = "\(configuration.redactedDescription)"
        let connection = try await Self.connect(configuration, logger: logger)
        do {
            let applied = try await Migrations.run(on: connection, logger: logger)
            for name in applied { logger.info("applied database migration", metadata: ["dynreg.migration": "\(name)"]) }
        } catch {
            try? await connection.close()
            throw StoreError(.unavailable, "cannot migrate the database: \(Self.reason(error))")
        }
        try? await connection.close()
        self.client = PostgresClient(configuration: configuration.clientConfiguration, backgroundLogger: logger)
        self.logger = logger
        self.leaseTimeout = configuration.leaseTimeout
    }

    /// Runs the connection pool until graceful shutdown.
    public func run() async throws {
        await client.run()
    }

    private static func connect(_ configuration: Configuration, logger: Logger) async throws -> PostgresConnection {
        let target = "PostgreSQL at \(configuration.redactedDescription)"
        let connectionConfiguration: PostgresConnection.Configuration
        do {
            connectionConfiguration = try configuration.connectionConfiguration()
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

    public func createProduct(_ product: Product) async throws -> Product {
        let authority = product.certificateAuthority
        return try await transaction { connection in
            let rows = try await connection.query(
                """
                INSERT INTO products (id, name, auth_type, secret, dynamic_registration, auto_create, device_quota,
                    allow_clockless, device_count, created_at, ca_certificate, ca_sealed_key, ca_key_type,
                    certificate_validity_days)
                VALUES (\(product.id), \(product.name), \(product.authType.rawValue), \(product.secret),
                    \(product.dynamicRegistration), \(product.autoCreate), \(product.deviceQuota),
                    \(product.allowClocklessDevices), 0, \(product.createdAt), \(authority?.certificatePEM),
                    \(authority?.sealedPrivateKey), \(authority?.keyType), \(authority?.certificateValidityDays))
                ON CONFLICT (id) DO NOTHING
                RETURNING \(unescaped: Self.productColumns)
                """, logger: logger)
            guard let created = try await Self.firstProduct(rows) else {
                throw StoreError(.productExists, "product \(product.id) already exists")
            }
            return created
        }
    }

    public func products() async throws -> [Product] {
        try await leased { connection in
            let rows = try await connection.query(
                "SELECT \(unescaped: Self.productColumns) FROM products ORDER BY created_at, id", logger: logger)
            var products: [Product] = []
            for try await row in rows { products.append(try Self.product(from: row)) }
            return products
        }
    }

    public func product(id: String) async throws -> Product? {
        try await leased { connection in try await Self.fetchProduct(connection, id: id, logger: logger) }
    }

    public func updateProduct(id: String, _ update: ProductUpdate) async throws -> Product {
        // Fields not named keep their current value; `.some(nil)` clears the quota.
        let setsQuota = update.deviceQuota != nil
        let quota = update.deviceQuota ?? nil
        return try await transaction { connection in
            let rows = try await connection.query(
                """
                UPDATE products SET
                    name = COALESCE(\(update.name), name),
                    dynamic_registration = COALESCE(\(update.dynamicRegistration), dynamic_registration),
                    auto_create = COALESCE(\(update.autoCreate), auto_create),
                    device_quota = CASE WHEN \(setsQuota) THEN \(quota)::bigint ELSE device_quota END,
                    allow_clockless = COALESCE(\(update.allowClocklessDevices), allow_clockless)
                WHERE id = \(id)
                RETURNING \(unescaped: Self.productColumns)
                """, logger: logger)
            guard let product = try await Self.firstProduct(rows) else { throw Self.productNotFound(id) }
            return product
        }
    }

    public func rotateProductSecret(id: String, newSecret: String) async throws -> Product {
        try await transaction { connection in
            let rows = try await connection.query(
                "UPDATE products SET secret = \(newSecret) WHERE id = \(id) RETURNING \(unescaped: Self.productColumns)",
                logger: logger)
            guard let product = try await Self.firstProduct(rows) else { throw Self.productNotFound(id) }
            return product
        }
    }

    public func deleteProduct(id: String) async throws {
        try await transaction { connection in
            guard try await Self.lockProduct(connection, id: id, logger: logger) != nil else {
                throw Self.productNotFound(id)
            }
            try await connection.query("DELETE FROM devices WHERE product_id = \(id)", logger: logger)
            try await connection.query("DELETE FROM nonces WHERE product_id = \(id)", logger: logger)
            try await connection.query("DELETE FROM certificates WHERE product_id = \(id)", logger: logger)
            try await connection.query("DELETE FROM products WHERE id = \(id)", logger: logger)
        }
    }

    // MARK: Devices

    public func createDevice(productId: String, deviceName: String, now: Date) async throws -> Device {
        try await transaction { connection in
            guard let product = try await Self.lockProduct(connection, id: productId, logger: logger) else {
                throw Self.productNotFound(productId)
            }
            if try await Self.fetchDevice(connection, productId: productId, name: deviceName, logger: logger) != nil {
                throw StoreError(.deviceExists, "device \(deviceName) already exists in product \(productId)")
            }
            if let quota = product.quota, product.count >= quota {
                throw StoreError(.quotaExceeded, "product \(productId) has reached its quota of \(quota) devices")
            }
            return try await Self.insertDevice(
                connection, productId: productId, name: deviceName, status: .created, psk: nil, now: now,
                registeredAt: nil, logger: logger)
        }
    }

    public func devices(productId: String, status: DeviceStatus?, limit: Int, after: String?) async throws -> [Device] {
        try await leased { connection in
            guard try await Self.fetchProduct(connection, id: productId, logger: logger) != nil else {
                throw Self.productNotFound(productId)
            }
            // NULL parameters switch a filter off, so one statement serves every combination.
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.deviceColumns) FROM devices
                WHERE product_id = \(productId)
                    AND (\(status?.rawValue)::text IS NULL OR status = \(status?.rawValue))
                    AND (\(after)::text IS NULL OR name > \(after))
                ORDER BY name LIMIT \(limit < 0 ? nil : limit)  -- negative: no limit, as in SQLite
                """, logger: logger)
            var devices: [Device] = []
            for try await row in rows { devices.append(try Self.device(from: row)) }
            return devices
        }
    }

    public func device(productId: String, deviceName: String) async throws -> Device? {
        try await leased { connection in
            try await Self.fetchDevice(connection, productId: productId, name: deviceName, logger: logger)
        }
    }

    public func deleteDevice(productId: String, deviceName: String) async throws {
        try await transaction { connection in
            // The product first, as everywhere: device_count changes below.
            _ = try await Self.lockProduct(connection, id: productId, logger: logger)
            let deleted = try await connection.query(
                "DELETE FROM devices WHERE product_id = \(productId) AND name = \(deviceName) RETURNING 1",
                logger: logger
            ).collect()
            guard !deleted.isEmpty else { throw Self.deviceNotFound(productId, deviceName) }
            try await connection.query(
                "DELETE FROM nonces WHERE product_id = \(productId) AND device_name = \(deviceName)", logger: logger)
            try await Self.revokeActiveCertificates(
                connection, productId: productId, deviceName: deviceName, now: Date(), logger: logger)
            try await connection.query(
                "UPDATE products SET device_count = device_count - 1 WHERE id = \(productId)", logger: logger)
        }
    }

    public func resetDevice(productId: String, deviceName: String) async throws -> Device {
        try await transaction { connection in
            let rows = try await connection.query(
                """
                UPDATE devices SET status = 'created', psk = NULL, registered_at = NULL, activated_at = NULL
                WHERE product_id = \(productId) AND name = \(deviceName)
                RETURNING \(unescaped: Self.deviceColumns)
                """, logger: logger)
            guard let device = try await Self.firstDevice(rows) else { throw Self.deviceNotFound(productId, deviceName) }
            try await connection.query(
                """
                DELETE FROM nonces WHERE product_id = \(productId) AND device_name = \(deviceName)
                    AND expires_at IS NULL
                """, logger: logger)
            try await Self.revokeActiveCertificates(
                connection, productId: productId, deviceName: deviceName, now: Date(), logger: logger)
            return device
        }
    }

    public func activateDevice(productId: String, deviceName: String, now: Date) async throws -> Device {
        try await transaction { connection in
            guard
                let device = try await Self.fetchDevice(
                    connection, productId: productId, name: deviceName, forUpdate: true, logger: logger)
            else { throw Self.deviceNotFound(productId, deviceName) }
            if device.status == .activated { return device }
            let rows = try await connection.query(
                """
                UPDATE devices SET status = 'activated', activated_at = \(now)
                WHERE product_id = \(productId) AND name = \(deviceName)
                RETURNING \(unescaped: Self.deviceColumns)
                """, logger: logger)
            guard let activated = try await Self.firstDevice(rows) else {
                throw Self.deviceNotFound(productId, deviceName)
            }
            // Clockless devices' nonces were kept until activation: registration is now refused anyway.
            try await connection.query(
                """
                DELETE FROM nonces WHERE product_id = \(productId) AND device_name = \(deviceName)
                    AND expires_at IS NULL
                """, logger: logger)
            return activated
        }
    }

    // MARK: Registration

    /// The store's refusals in the order of `dynreg_register`'s decision index (migration v3): 1 is success,
    /// 2 the first of these.
    private static let rejections: [RegistrationErrorCode] = [
        .productNotExist, .deviceNotExist, .deviceQuota, .deviceAlreadyActivated, .nonceReused,
    ]
    /// The audit outcome for each decision index, from 1.
    private static let outcomes = [RegistrationEvent.success] + rejections.map(\.code)

    /// One statement makes the decision, the credential and the audit event (see migration v3), in an explicit
    /// transaction: in autocommit, PostgreSQL sends the rows before it commits, and postgres-nio would not
    /// report a failure of that commit (a serialization failure, a deferred constraint) to this call.
    public func register(_ attempt: RegistrationAttempt) async throws -> RegistrationDecision {
        let event = attempt.event(for: .rejected(.internalError))
        var certificate: DeviceCertificate?
        if case .certificate(let issued) = attempt.credential { certificate = issued }
        let query: PostgresQuery = """
            SELECT decision, d_status, d_psk, d_created_at, d_registered_at, d_activated_at, d_registration_count
            FROM dynreg_register(
                \(attempt.productId), \(attempt.deviceName), \(attempt.timestamp), \(attempt.nonce),
                \(attempt.replayExpiry), \(attempt.credential.psk), \(attempt.now),
                \(certificate?.serial), \(certificate?.fingerprint), \(certificate?.pem), \(certificate?.notBefore),
                \(certificate?.notAfter),
                \(event.productId), \(event.deviceName), \(event.remoteAddress), \(event.endpoint), \(Self.outcomes))
            """
        let logger = self.logger
        return try await transaction { connection in
            let rows = try await connection.query(query, logger: logger)
            var decision: RegistrationDecision?
            for try await row in rows where decision == nil {
                let (index, status, psk, createdAt, registeredAt, activatedAt, count) = try row.decode(
                    (Int, String?, String?, Date?, Date?, Date?, Int?).self)
                if index == 1, let status, let createdAt, let count {
                    decision = .issued(
                        Device(
                            productId: attempt.productId, name: attempt.deviceName,
                            status: DeviceStatus(rawValue: status) ?? .registered, psk: psk, createdAt: createdAt,
                            registeredAt: registeredAt, activatedAt: activatedAt, registrationCount: count))
                } else if (2...6).contains(index) {
                    decision = .rejected(Self.rejections[index - 2])
                }
            }
            guard let decision else {
                throw StoreError(.unavailable, "dynreg_register returned no decision")
            }
            return decision
        }
    }

    // Writes run in explicit transactions even when they are one statement: in autocommit PostgreSQL commits
    // after the statement's CommandComplete, and postgres-nio would not report a failure of that commit.
    public func purgeExpiredNonces(now: Date) async throws -> Int {
        try await transaction { connection in
            let rows = try await connection.query(
                "DELETE FROM nonces WHERE expires_at IS NOT NULL AND expires_at < \(now) RETURNING 1", logger: logger)
            var count = 0
            for try await _ in rows { count += 1 }
            return count
        }
    }

    // MARK: Certificates

    public func certificates(productId: String, deviceName: String) async throws -> [DeviceCertificate] {
        try await leased { connection in
            guard try await Self.fetchDevice(connection, productId: productId, name: deviceName, logger: logger) != nil
            else { throw Self.deviceNotFound(productId, deviceName) }
            return try await Self.certificates(
                connection.query(
                    """
                    SELECT \(unescaped: Self.certificateColumns) FROM certificates
                    WHERE product_id = \(productId) AND device_name = \(deviceName) ORDER BY issued_at DESC
                    """, logger: logger))
        }
    }

    public func revokeCertificate(productId: String, serial: String, now: Date) async throws -> DeviceCertificate {
        let serial = serial.lowercased()
        return try await transaction { connection in
            try await connection.query(
                """
                UPDATE certificates SET revoked_at = \(now)
                WHERE product_id = \(productId) AND serial = \(serial) AND revoked_at IS NULL
                """, logger: logger)
            let rows = try await connection.query(
                """
                SELECT \(unescaped: Self.certificateColumns) FROM certificates
                WHERE product_id = \(productId) AND serial = \(serial)
                """, logger: logger)
            guard let certificate = try await Self.certificates(rows).first else {
                throw StoreError(.certificateNotFound, "no certificate with serial \(serial) in product \(productId)")
            }
            return certificate
        }
    }

    public func revokedCertificates(productId: String) async throws -> [DeviceCertificate] {
        try await leased { connection in
            try await Self.certificates(
                connection.query(
                    """
                    SELECT \(unescaped: Self.certificateColumns) FROM certificates
                    WHERE product_id = \(productId) AND revoked_at IS NOT NULL ORDER BY revoked_at
                    """, logger: logger))
        }
    }

    public func certificate(fingerprint: String) async throws -> DeviceCertificate? {
        let fingerprint = fingerprint.lowercased()
        return try await leased { connection in
            try await Self.certificates(
                connection.query(
                    """
                    SELECT \(unescaped: Self.certificateColumns) FROM certificates WHERE fingerprint = \(fingerprint)
                    """, logger: logger)
            ).first
        }
    }

    private static func revokeActiveCertificates(
        _ connection: PostgresConnection, productId: String, deviceName: String, now: Date, logger: Logger
    ) async throws {
        try await connection.query(
            """
            UPDATE certificates SET revoked_at = \(now)
            WHERE product_id = \(productId) AND device_name = \(deviceName) AND revoked_at IS NULL
            """, logger: logger)
    }

    // MARK: Audit log

    public func recordEvent(_ event: RegistrationEvent) async throws {
        try await transaction { connection in try await Self.insertEvent(connection, event, logger: logger) }
    }

    private static func insertEvent(_ connection: PostgresConnection, _ event: RegistrationEvent, logger: Logger)
        async throws
    {
        _ = try await connection.query(
            """
            INSERT INTO events (time, product_id, device_name, outcome, remote_address, endpoint)
            VALUES (\(event.time), \(event.productId), \(event.deviceName), \(event.outcome),
                \(event.remoteAddress), \(event.endpoint))
            """, logger: logger)
    }

    public func events(productId: String, limit: Int) async throws -> [RegistrationEvent] {
        try await leased { connection in
            let rows = try await connection.query(
                """
                SELECT id, time, product_id, device_name, outcome, remote_address, endpoint FROM events
                WHERE product_id = \(productId) ORDER BY id DESC LIMIT \(limit < 0 ? nil : limit)
                """, logger: logger)
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

    public func checkHealth() async throws {
        try await leased { connection in
            _ = try await connection.query("SELECT 1", logger: logger).collect()
        }
    }

    // MARK: Connections and transactions

    /// Runs `body` on a pooled connection, answering for it when the database cannot:
    /// - while no operation gets a connection for `leaseTimeout` (the database is down), instead of holding
    ///   requests for the pool's minute of retries; a busy pool, still handing out connections, is waited for;
    /// - when the connection closes under `body`: postgres-nio never answers a query written to a closed
    ///   connection, so the work is left behind rather than awaited, which is why it runs in a task of its own.
    private func leased<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T) async throws
        -> T
    {
        let client = self.client
        let progress = self.progress
        let timeout = leaseTimeout
        let lease = Lease<T>()
        let work = Task {
            do {
                let value = try await client.withConnection { connection in
                    progress.record()
                    lease.start(on: connection)
                    return try await body(connection)
                }
                lease.finish(.success(value))
            } catch {
                lease.finish(.failure(error))
            }
        }
        let watchdog = Task {
            var wait = timeout
            while true {
                try? await Task.sleep(for: wait)
                if Task.isCancelled { return }
                switch lease.phase {
                case .finished:
                    return
                case .waiting:
                    wait = progress.untilStalled(after: timeout)
                    if wait <= .zero {
                        lease.finish(.failure(StoreError(.unavailable, "no database connection within \(timeout)")))
                        work.cancel()
                        return
                    }
                case .working(let connection):
                    if connection.isClosed {
                        lease.finish(.failure(StoreError(.unavailable, "the database connection closed")))
                        return
                    }
                    wait = timeout
                }
            }
        }
        defer { watchdog.cancel() }
        return try await withTaskCancellationHandler {
            try await lease.value()
        } onCancel: {
            work.cancel()
        }
    }

    /// One transaction; `body`'s errors roll it back and surface unchanged. Rejections commit nothing to undo.
    /// A deadlock or serialization failure (which the lock order should prevent) is retried.
    private func transaction<T: Sendable>(_ body: @escaping @Sendable (PostgresConnection) async throws -> T)
        async throws -> T
    {
        let logger = self.logger
        return try await retrying {
            try await self.leased { connection in
                try await connection.query("BEGIN", logger: logger)
                let value: T
                do {
                    value = try await body(connection)
                } catch {
                    _ = try? await connection.query("ROLLBACK", logger: logger)
                    throw error
                }
                // Only a COMMIT that returns means durable: a registration is acknowledged after this line.
                try await connection.query("COMMIT", logger: logger)
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
                logger.debug("retrying a transaction", metadata: ["dynreg.sqlstate": "\(error.serverInfo?[.sqlState] ?? "")"])
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
        created_at, ca_certificate, ca_sealed_key, ca_key_type, certificate_validity_days
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
    private static func lockProduct(_ connection: PostgresConnection, id: String, logger: Logger) async throws
        -> LockedProduct?
    {
        let rows = try await connection.query(
            "SELECT auto_create, device_quota, device_count FROM products WHERE id = \(id) FOR NO KEY UPDATE",
            logger: logger)
        var locked: LockedProduct?
        for try await row in rows {
            let (autoCreate, quota, count) = try row.decode((Bool, Int?, Int).self)
            locked = LockedProduct(autoCreate: autoCreate, quota: quota, count: count)
        }
        return locked
    }

    private static func insertDevice(
        _ connection: PostgresConnection, productId: String, name: String, status: DeviceStatus, psk: String?,
        now: Date, registeredAt: Date?, logger: Logger
    ) async throws -> Device {
        // One round trip for both: the product row stays locked until COMMIT, so every one counts.
        let rows = try await connection.query(
            """
            WITH inserted AS (
                INSERT INTO devices (product_id, name, status, psk, created_at, registered_at, registration_count)
                VALUES (\(productId), \(name), \(status.rawValue), \(psk), \(now), \(registeredAt),
                    \(registeredAt == nil ? 0 : 1))
                RETURNING \(unescaped: deviceColumns)
            ), counted AS (
                UPDATE products SET device_count = device_count + 1 WHERE id = \(productId)
            )
            SELECT * FROM inserted
            """, logger: logger)
        guard let device = try await firstDevice(rows) else { throw deviceNotFound(productId, name) }
        return device
    }

    private static func fetchProduct(_ connection: PostgresConnection, id: String, logger: Logger) async throws
        -> Product?
    {
        try await firstProduct(
            connection.query("SELECT \(unescaped: productColumns) FROM products WHERE id = \(id)", logger: logger))
    }

    private static func fetchDevice(
        _ connection: PostgresConnection, productId: String, name: String, forUpdate: Bool = false, logger: Logger
    ) async throws -> Device? {
        try await firstDevice(
            connection.query(
                """
                SELECT \(unescaped: deviceColumns) FROM devices WHERE product_id = \(productId) AND name = \(name)
                \(unescaped: forUpdate ? "FOR UPDATE" : "")
                """, logger: logger))
    }

    private static func firstProduct(_ rows: PostgresRowSequence) async throws -> Product? {
        var first: Product?
        for try await row in rows where first == nil { first = try product(from: row) }
        return first
    }

    private static func firstDevice(_ rows: PostgresRowSequence) async throws -> Device? {
        var first: Device?
        for try await row in rows where first == nil { first = try device(from: row) }
        return first
    }

    private static func product(from row: PostgresRow) throws -> Product {
        let (
            id, name, authType, secret, dynamicRegistration, autoCreate, quota, allowClockless, count, createdAt,
            caCertificate, caSealedKey, caKeyType, validityDays
        ) = try row.decode(
            (String, String, String, String, Bool, Bool, Int?, Bool, Int, Date, String?, String?, String?, Int?).self)
        return Product(
            id: id, name: name, authType: AuthType(rawValue: authType) ?? .key, secret: secret,
            dynamicRegistration: dynamicRegistration, autoCreate: autoCreate, deviceQuota: quota,
            allowClocklessDevices: allowClockless, deviceCount: count, createdAt: createdAt,
            certificateAuthority: caCertificate.map { pem in
                StoredCertificateAuthority(
                    certificatePEM: pem, sealedPrivateKey: caSealedKey ?? "", keyType: caKeyType ?? "",
                    certificateValidityDays: validityDays ?? 3650)
            })
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

    private static func device(from row: PostgresRow) throws -> Device {
        let (productId, name, status, psk, createdAt, registeredAt, activatedAt, count) = try row.decode(
            (String, String, String, String?, Date, Date?, Date?, Int).self)
        return Device(
            productId: productId, name: name, status: DeviceStatus(rawValue: status) ?? .created, psk: psk,
            createdAt: createdAt, registeredAt: registeredAt, activatedAt: activatedAt, registrationCount: count)
    }

    private static func productNotFound(_ id: String) -> StoreError {
        StoreError(.productNotFound, "product \(id) does not exist")
    }

    private static func deviceNotFound(_ productId: String, _ name: String) -> StoreError {
        StoreError(.deviceNotFound, "device \(name) does not exist in product \(productId)")
    }
}

/// One operation's progress and outcome, delivered once, to whichever of work and watchdog decides first.
private final class Lease<T: Sendable>: @unchecked Sendable {
    enum Phase {
        case waiting
        case working(PostgresConnection)
        case finished
    }

    private let lock = NSLock()
    private var state = Phase.waiting
    private var result: Result<T, any Error>?
    private var continuation: CheckedContinuation<T, any Error>?

    var phase: Phase { lock.withLock { state } }

    func start(on connection: PostgresConnection) {
        lock.withLock { if case .waiting = state { state = .working(connection) } }
    }

    func finish(_ outcome: Result<T, any Error>) {
        let waiter: CheckedContinuation<T, any Error>? = lock.withLock {
            guard result == nil else { return nil }
            result = outcome
            state = .finished
            defer { continuation = nil }
            return continuation
        }
        waiter?.resume(with: outcome)
    }

    func value() async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            let ready: Result<T, any Error>? = lock.withLock {
                if result == nil { self.continuation = continuation }
                return result
            }
            if let ready { continuation.resume(with: ready) }
        }
    }
}

/// Which of two racing callbacks came first.
private final class FirstOutcome: @unchecked Sendable {
    private let lock = NSLock()
    private var claimed = false

    func claim() -> Bool {
        lock.withLock {
            defer { claimed = true }
            return !claimed
        }
    }
}

/// When an operation last got a pooled connection, shared by all operations of a store.
private final class LeaseProgress: @unchecked Sendable {
    private let lock = NSLock()
    private var last = ContinuousClock.now

    func record() { lock.withLock { last = .now } }
    /// How long until `duration` will have passed without a lease; zero or less once it has.
    func untilStalled(after duration: Duration) -> Duration { lock.withLock { duration - (ContinuousClock.now - last) } }
}
