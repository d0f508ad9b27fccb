package import Foundation
package import ServiceLifecycle

/// Everything the server keeps: products, devices and their credentials, the replay cache and the audit log.
///
/// Implementations make each method atomic; `register` in particular decides and commits in one transaction,
/// so that quotas and uniqueness hold under concurrent registrations.
///
/// A store is a `Service`: `run()` runs what it needs while it serves (a connection pool, a group committer) and
/// returns at graceful shutdown; the server runs it in its ServiceGroup, before the HTTP server and stopped
/// after it. `init` does no I/O beyond opening a local file; ``migrate()`` runs before the server starts.
package protocol RegistrationStore: Service {
    /// Brings the schema up to date (and, for a database server, proves it can be reached and logged in to);
    /// returns the names of the migrations it applied. Safe to run while `run()` runs, and from several instances.
    func migrate() async throws -> [String]

    // MARK: Products
    func createProduct(_ product: Product) async throws -> Product
    func products() async throws -> [Product]
    func product(id: String) async throws -> Product?
    /// The product for checking a device request: may come from a cache the store keeps coherent with product
    /// writes, so `deviceCount` can be stale; `register` re-reads what it decides on.
    func productForAdmission(id: String) async throws -> Product?
    func updateProduct(id: String, _ update: ProductUpdate) async throws -> Product
    func rotateProductSecret(id: String, newSecret: String) async throws -> Product
    func deleteProduct(id: String) async throws

    // MARK: Devices
    /// Pre-registers a device (status `created`); fails with `deviceExists` or `quotaExceeded`.
    func createDevice(productId: String, deviceName: String, now: Date) async throws -> Device
    /// Devices ordered by name, after the cursor `after`.
    func devices(productId: String, status: DeviceStatus?, limit: Int, after: String?) async throws -> [Device]
    func device(productId: String, deviceName: String) async throws -> Device?
    /// ``device(productId:deviceName:)`` for a broker login: may come from memory, kept exact by the store (on
    /// PostgreSQL, as exact as its invalidations from other instances are prompt).
    func deviceForLogin(productId: String, deviceName: String) async throws -> Device?
    func deleteDevice(productId: String, deviceName: String) async throws
    /// Forgets the credential and activation (revoking its certificates): the device may register again.
    func resetDevice(productId: String, deviceName: String) async throws -> Device
    /// Marks a device activated (idempotent); fails with `deviceNotFound` if it does not exist.
    func activateDevice(productId: String, deviceName: String, now: Date) async throws -> Device

    // MARK: Registration
    /// Checks replay, existence, activation and quota, and issues the credential, atomically and durably; the
    /// audit event for the decision (`attempt.event(for:)`) commits in the same transaction.
    func register(_ attempt: RegistrationAttempt) async throws -> RegistrationDecision

    /// Removes replay entries that expired before `now`; returns how many.
    func purgeExpiredNonces(now: Date) async throws -> Int

    // MARK: Certificates
    /// A device's certificates, newest first: at most `limit`, after the one whose serial is `after` (a cursor).
    func certificates(
        productId: String, deviceName: String, limit: Int, after: String?
    ) async throws -> [DeviceCertificate]
    /// Revokes one certificate (idempotent); fails with `certificateNotFound`.
    func revokeCertificate(productId: String, serial: String, now: Date) async throws -> DeviceCertificate
    /// Every revoked certificate of a product, for its CRL.
    func revokedCertificates(productId: String) async throws -> [DeviceCertificate]
    /// Looks a certificate up by its SHA-256 fingerprint (lower-case hex).
    func certificate(fingerprint: String) async throws -> DeviceCertificate?

    // MARK: Audit log
    func recordEvent(_ event: RegistrationEvent) async throws
    /// Newest first, as `query` selects: of one product (its index), or of every product (`nil`, the log's order).
    func events(productId: String?, _ query: EventQuery) async throws -> [RegistrationEvent]
    /// Registration events at or after `since`, not operators' `Admin.*` actions, counted per minute and outcome over
    /// every product, oldest minute first. One query over the primary key: ids grow with time, so the events since
    /// `since` are those after the newest one more than ``eventClockSlack`` older, and the cost is the rows of the
    /// period, not of the log. Exact while events are written within that slack of their time.
    func registrationsPerMinute(since: Date) async throws -> [OutcomeMinute]
    /// Removes events, refusal counts and ended lockouts older than `before`, a batch at a time.
    func purgeAudit(before: Date) async throws -> AuditPurge
    /// Adds counts to the per-minute refusal rows (creating them as needed), in one transaction.
    func recordRefusals(_ counts: [RefusalCount]) async throws
    /// Per-minute refusal rows, newest minute first; `productId` "" selects requests that named no known product.
    func refusals(productId: String?, limit: Int) async throws -> [RefusalCount]

    // MARK: Limits
    /// The product's own limits; none set when it has no row. Removed with the product.
    func limits(productId: String) async throws -> ProductLimits
    func setLimits(productId: String, _ limits: ProductLimits) async throws
    /// Devices of the product created at or after `since` (by registration or by an operator): the brake's count.
    func devicesCreated(productId: String, since: Date) async throws -> Int
    /// Keeps (or replaces) the lockout of an address for a product.
    func recordLockout(_ lockout: Lockout) async throws
    /// Lockouts that end after `date`, newest first, of one product or of all: with `date` now, those in force.
    /// A lockout that ended stays for a while: failures before its end no longer count.
    func lockouts(productId: String?, endingAfter date: Date) async throws -> [Lockout]
    /// Ends a lockout in force at `now`; false when there was none.
    func clearLockout(productId: String, remoteAddress: String, now: Date) async throws -> Bool
    /// (product, address) pairs with at least `atLeast` counted refusals of `outcome` since `since`, from the
    /// per-minute refusal rows every instance adds to.
    func refusalTotals(outcome: String, since: Date, atLeast: Int) async throws -> [RefusalCount]

    /// How many devices each status has, over every product: a scan, for metrics read now and then.
    func deviceCounts() async throws -> [DeviceStatus: Int]

    /// A cheap query proving the store answers.
    func checkHealth() async throws

    // MARK: Master key
    /// Opens every sealed value (CA keys, product secrets, psks) with the store's master key and seals it again under
    /// `newKey`, all in one transaction; `progress` hears after the products and after each page of devices. The
    /// store keeps its own (old) key: afterwards, open a new store with `newKey`. Every server on the database must
    /// be stopped: one still running holds the old key.
    func rotateMasterKey(
        to newKey: MasterKey, progress: @escaping @Sendable (SecretRewriteProgress) -> Void
    ) async throws -> SecretRewriteProgress
}

/// How far an event's time may lag behind a later-written event's, for ``RegistrationStore/registrationsPerMinute(since:)``:
/// events are written by the group committer (or a transaction) moments after they happen, across instances whose
/// clocks agree to well within this.
package let eventClockSlack: TimeInterval = 60

extension RegistrationStore {
    /// The newest `limit` events of a product.
    package func events(productId: String, limit: Int) async throws -> [RegistrationEvent] {
        try await events(productId: productId, EventQuery(limit: limit))
    }

    /// Every certificate of a device, newest first.
    package func certificates(productId: String, deviceName: String) async throws -> [DeviceCertificate] {
        try await certificates(productId: productId, deviceName: deviceName, limit: Int(Int32.max), after: nil)
    }

    package func productForAdmission(id: String) async throws -> Product? {
        try await product(id: id)
    }

    package func deviceForLogin(productId: String, deviceName: String) async throws -> Device? {
        try await device(productId: productId, deviceName: deviceName)
    }
}
