import DynRegCA
import DynRegProtocol
import DynRegStore
import Foundation
import Logging

/// What an operator may do to products, devices and certificates: the defaults, the validation and CA
/// creation, over any store and without HTTP. Its own refusals are `AdminError`s; the store's errors pass
/// through as `StoreError`s, and the admin routes translate both in one place.
struct ProductAdministration<Store: RegistrationStore>: Sendable {
    static var maximumNameLength: Int { 200 }
    static var defaultCertificateValidityDays: Int { 3650 }
    static var certificateValidityDays: ClosedRange<Int> { 1...36_500 }
    static var defaultCAKeyType: CAKeyType { .p256 }
    /// The quota of a product created without one (`"deviceQuota": null` asks for none).
    package static var defaultDeviceQuota: Int { 10_000 }
    /// Devices and events per page, when the caller names no limit, and the most it may name.
    static var defaultPageSize: Int { 100 }
    static var maximumPageSize: Int { 1000 }

    let store: Store
    let authorities: CertificateAuthorities
    /// Told about every change to a CA or to revocations, for the CRL directory.
    var revocations: RevocationNotifier? = nil
    /// Told when an operator clears a lockout or changes a product's limits, so that this instance applies it at once.
    var lockouts: SignatureLockouts? = nil
    var productLimits: ProductLimitsCache? = nil

    /// A page of devices; `nextCursor` is the name to continue after, `nil` on the last page.
    struct DevicePage: Sendable, Hashable {
        var devices: [Device]
        var nextCursor: String?
    }

    // MARK: Products

    /// Creates a product with a fresh id and secret; certificate products also get a CA (new or imported).
    func createProduct(
        _ input: ProductCreateInput, limits: ProductLimitsInput = ProductLimitsInput(), now: Date = Date()
    ) async throws -> Product {
        let name = try Self.validName(input.name)
        // A leaked product secret creates devices only up to the quota: new products get a finite one.
        let quota = input.deviceQuota ?? Self.defaultDeviceQuota
        if let quota { try Self.checkQuota(quota) }
        let id = Secrets.productId()
        let authType = input.authType ?? .key
        var authority: StoredCertificateAuthority?
        if authType == .certificate {
            let validity = input.certificateValidityDays ?? Self.defaultCertificateValidityDays
            guard Self.certificateValidityDays.contains(validity) else {
                throw AdminError(.invalidValidity, "certificateValidityDays must be 1-36500")
            }
            authority = try makeAuthority(productId: id, input: input, validityDays: validity)
        } else if input.caCertificatePem != nil || input.caPrivateKeyPem != nil || input.caKeyType != nil
            || input.trustedCaCertificatePems != nil || input.deviceKeyType != nil
        {
            throw AdminError(.invalidAuthType, "CA settings apply to certificate products only")
        }
        let product = Product(
            id: id, name: name, authType: authType, secret: Secrets.productSecret(),
            dynamicRegistration: input.dynamicRegistration ?? true, autoCreate: input.autoCreate ?? true,
            deviceQuota: quota, allowClocklessDevices: input.allowClocklessDevices ?? false,
            deviceCount: 0, createdAt: now, certificateAuthority: authority,
            trustedDeviceCAs: try Self.trustedAuthorities(input.trustedCaCertificatePems ?? [], now: now),
            topicPolicy: try Self.checkedTopics(input.topicRules ?? .default),
            deviceKeyType: input.deviceKeyType ?? .p256)
        try Self.check(limits.applied(to: ProductLimits()))
        defer { if authType == .certificate { revocations?.changed() } }
        let created = try await store.createProduct(product)
        try await setLimits(productId: created.id, limits)
        return created
    }

    func products() async throws -> [Product] {
        try await store.products()
    }

    func product(id: String) async throws -> Product {
        guard let product = try await store.product(id: id) else { throw AdminError.productNotFound(id) }
        return product
    }

    func updateProduct(
        id: String, _ update: ProductUpdate, limits: ProductLimitsInput = ProductLimitsInput(), now: Date = Date()
    ) async throws -> Product {
        // The rules of creation hold for changes too; everything is checked before anything is changed, so a
        // refused change leaves the product as it was.
        try Self.check(limits.applied(to: ProductLimits()))
        var update = update
        if let name = update.name { _ = try Self.validName(name) }
        if case .some(.some(let quota)) = update.deviceQuota { try Self.checkQuota(quota) }
        if update.trustedDeviceCAs != nil || update.deviceKeyType != nil {
            guard try await product(id: id).authType == .certificate else {
                throw AdminError(.invalidAuthType, "CA settings apply to certificate products only")
            }
        }
        if let trusted = update.trustedDeviceCAs {
            update.trustedDeviceCAs = try Self.trustedAuthorities(trusted, now: now)
        }
        if let topics = update.topicPolicy { update.topicPolicy = try Self.checkedTopics(topics) }
        if !limits.isEmpty { try await setLimits(productId: id, limits) }
        return try await store.updateProduct(id: id, update)
    }

    /// At most this many topic rules per product: every broker check reads them all.
    static var maximumTopicRules: Int { 64 }

    static func checkedTopics(_ policy: TopicPolicy) throws -> TopicPolicy {
        guard policy.rules.count <= maximumTopicRules else {
            throw AdminError(.invalidTopicRule, "at most \(maximumTopicRules) topic rules")
        }
        for (index, rule) in policy.rules.enumerated() where !TopicRules.isValidPattern(rule.topic) {
            throw AdminError(
                .invalidTopicRule,
                "topicRules.rules[\(index)].topic must be 1-256 bytes, with + and # only as whole levels and # last")
        }
        return policy
    }

    /// At most this many operator CAs per product: each one is tried for every `ClientCert`.
    static var maximumTrustedAuthorities: Int { 16 }

    /// Operator CA certificates as this server keeps them, each checked to be a CA that may sign, valid now.
    static func trustedAuthorities(_ pems: [String], now: Date) throws -> [String] {
        guard pems.count <= maximumTrustedAuthorities else {
            throw AdminError(.invalidCertificateAuthority, "at most \(maximumTrustedAuthorities) trusted CAs")
        }
        var trusted: [String] = []
        for (index, pem) in pems.enumerated() {
            do {
                let normalized = try DeviceCertificates.trustedAuthority(pem: pem, now: now)
                if !trusted.contains(normalized) { trusted.append(normalized) }
            } catch {
                throw AdminError(
                    .invalidCertificateAuthority,
                    "trustedCaCertificatePems[\(index)]: \(error.description), or not valid now")
            }
        }
        return trusted
    }

    /// An operator's change, in the audit log; a failure to write it is logged, the change stands.
    func recordAction(_ event: RegistrationEvent, logger: Logger) async {
        do {
            try await store.recordEvent(event)
        } catch {
            logger.warning("could not record an admin action", metadata: ["dynreg.action": "\(event.outcome)"])
        }
    }

    // MARK: Limits and lockouts

    func limits(productId: String) async throws -> ProductLimits {
        try await store.limits(productId: productId)
    }

    /// Sets what `input` names of the product's limits, after checking them; answers the limits now in force.
    @discardableResult
    func setLimits(productId: String, _ input: ProductLimitsInput) async throws -> ProductLimits {
        let current = try await store.limits(productId: productId)
        guard !input.isEmpty else { return current }
        let limits = input.applied(to: current)
        try Self.check(limits)
        try await store.setLimits(productId: productId, limits)
        productLimits?.forget(productId: productId)
        return limits
    }

    static func check(_ limits: ProductLimits) throws {
        if let rate = limits.registrationRate {
            guard (0.001...1_000_000).contains(rate.perSecond), (1...10_000_000).contains(rate.burst) else {
                throw AdminError(
                    .invalidLimit, "registrationRate needs perSecond 0.001-1000000 and burst 1-10000000")
            }
        }
        if let perHour = limits.newDevicesPerHour, !(1...1_000_000_000).contains(perHour) {
            throw AdminError(.invalidLimit, "newDevicesPerHour must be 1-1000000000, or null for no brake")
        }
    }

    /// Addresses locked out of the product now.
    func lockouts(productId: String, now: Date = Date()) async throws -> [Lockout] {
        _ = try await product(id: productId)
        return try await store.lockouts(productId: productId, endingAfter: now)
    }

    func clearLockout(productId: String, address: String, now: Date = Date()) async throws {
        _ = try await product(id: productId)
        guard try await store.clearLockout(productId: productId, remoteAddress: address, now: now) else {
            throw AdminError(.notFound, "\(address) is not locked out of product \(productId)")
        }
        lockouts?.cleared(productId: productId, address: address)
    }

    func rotateSecret(productId: String) async throws -> Product {
        try await store.rotateProductSecret(id: productId, newSecret: Secrets.productSecret())
    }

    func deleteProduct(id: String) async throws {
        try await store.deleteProduct(id: id)
        revocations?.changed()
    }

    // MARK: Devices

    func createDevice(productId: String, deviceName: String, now: Date = Date()) async throws -> Device {
        guard DeviceNameRules.isValid(deviceName) else {
            throw AdminError(.deviceNameInvalid, RegistrationErrorCode.deviceNameInvalid.defaultMessage)
        }
        return try await store.createDevice(productId: productId, deviceName: deviceName, now: now)
    }

    /// - Parameters:
    ///   - status: `created`, `registered` or `activated`; `nil` for all.
    ///   - limit: clamped to 1…`maximumPageSize`; `nil` for `defaultPageSize`.
    ///   - after: the previous page's `nextCursor`.
    func devices(productId: String, status: String?, limit: Int?, after: String?) async throws -> DevicePage {
        var filter: DeviceStatus?
        if let status {
            guard let parsed = DeviceStatus(rawValue: status) else {
                throw AdminError(.invalidStatus, "status must be created, registered or activated")
            }
            filter = parsed
        }
        let limit = Self.pageSize(limit)
        let devices = try await store.devices(productId: productId, status: filter, limit: limit, after: after)
        return DevicePage(devices: devices, nextCursor: devices.count == limit ? devices.last?.name : nil)
    }

    func device(productId: String, deviceName: String) async throws -> Device {
        guard let device = try await store.device(productId: productId, deviceName: deviceName) else {
            throw AdminError.deviceNotFound(deviceName)
        }
        return device
    }

    func deleteDevice(productId: String, deviceName: String) async throws {
        try await store.deleteDevice(productId: productId, deviceName: deviceName)
        revocations?.changed()
    }

    func resetDevice(productId: String, deviceName: String) async throws -> Device {
        defer { revocations?.changed() }
        return try await store.resetDevice(productId: productId, deviceName: deviceName)
    }

    func activateDevice(productId: String, deviceName: String, now: Date = Date()) async throws -> Device {
        try await store.activateDevice(productId: productId, deviceName: deviceName, now: now)
    }

    // MARK: Certificates and the audit log

    /// The product CA's certificate, PEM.
    func caCertificate(productId: String) async throws -> String {
        try await certificateProduct(productId).authority.certificatePEM
    }

    /// A CRL of the product's revoked certificates, signed by its CA, PEM.
    func crl(productId: String, now: Date = Date()) async throws -> String {
        let product = try await certificateProduct(productId).product
        let revoked = try await store.revokedCertificates(productId: product.id)
        do {
            return try await authorities.crl(for: product, revoked: revoked, now: now)
        } catch {
            throw AdminError(.internalError, "the CRL could not be signed")
        }
    }

    /// Newest first, a page at a time: `nextCursor` is the serial to continue after.
    func certificates(
        productId: String, deviceName: String, limit: Int? = nil, after: String? = nil
    ) async throws -> (certificates: [DeviceCertificate], nextCursor: String?) {
        let limit = Self.pageSize(limit)
        let page = try await store.certificates(
            productId: productId, deviceName: deviceName, limit: limit, after: after)
        return (page, page.count == limit ? page.last?.serial : nil)
    }

    /// Idempotent: revoking a revoked certificate answers it unchanged.
    func revokeCertificate(productId: String, serial: String, now: Date = Date()) async throws -> DeviceCertificate {
        defer { revocations?.changed() }
        return try await store.revokeCertificate(productId: productId, serial: serial, now: now)
    }

    /// Newest first; `limit` as for `devices`.
    func events(productId: String, limit: Int?) async throws -> [RegistrationEvent] {
        try await events(productId: productId, limit: limit, before: nil).events
    }

    /// A page of events, newest first; `nextCursor` is the id to pass as `before` for the next.
    func events(
        productId: String, limit: Int?, before: Int64?, since: Date? = nil, outcome: String? = nil,
        deviceName: String? = nil
    ) async throws -> (events: [RegistrationEvent], nextCursor: String?) {
        _ = try await product(id: productId)
        let limit = Self.pageSize(limit)
        let events = try await store.events(
            productId: productId,
            EventQuery(limit: limit, before: before, since: since, outcome: outcome, deviceName: deviceName))
        return (events, events.count == limit ? events.last.map { String($0.id) } : nil)
    }

    /// Every product's events, newest first, filtered in the store; a filter looks through the newest `scanLimit`
    /// events of the log at most.
    func recentEvents(
        limit: Int?, outcome: String? = nil, deviceName: String? = nil, scanLimit: Int? = nil
    ) async throws -> [RegistrationEvent] {
        try await store.events(
            productId: nil,
            EventQuery(limit: Self.pageSize(limit), outcome: outcome, deviceName: deviceName, scanLimit: scanLimit))
    }

    /// Registration attempts per minute and outcome over every product since `since`, oldest first.
    func registrationsPerMinute(since: Date) async throws -> [OutcomeMinute] {
        try await store.registrationsPerMinute(since: since)
    }

    /// Per-minute refusal counts, newest first: of one product, of requests that named no known product
    /// (`productId` ""), or of all.
    func refusals(productId: String?, limit: Int?) async throws -> [RefusalCount] {
        if let productId, !productId.isEmpty { _ = try await product(id: productId) }
        return try await store.refusals(productId: productId, limit: Self.pageSize(limit))
    }

    // MARK: Rules

    static func pageSize(_ limit: Int?) -> Int {
        min(max(limit ?? defaultPageSize, 1), maximumPageSize)
    }

    private static func validName(_ name: String?) throws -> String {
        guard let name, !name.trimmingCharacters(in: .whitespaces).isEmpty, name.count <= maximumNameLength else {
            throw AdminError(.invalidName, "name must be 1-200 characters")
        }
        // Names reach operators' terminals and the console: no escape sequences, no line breaks.
        guard !name.unicodeScalars.contains(where: { $0.value < 0x20 || (0x7F...0x9F).contains($0.value) }) else {
            throw AdminError(.invalidName, "name must not contain control characters (C0, DEL or C1)")
        }
        return name
    }

    private static func checkQuota(_ quota: Int) throws {
        guard quota >= 0 else { throw AdminError(.invalidQuota, "deviceQuota must be zero or more") }
    }

    private func certificateProduct(
        _ id: String
    ) async throws
        -> (product: Product, authority: StoredCertificateAuthority)
    {
        let product = try await product(id: id)
        guard let authority = product.certificateAuthority else {
            throw AdminError(.notFound, "product \(id) uses key authentication and has no CA")
        }
        return (product, authority)
    }

    /// A new CA, or the imported one, sealed under the master key for storage.
    private func makeAuthority(
        productId: String, input: ProductCreateInput, validityDays: Int
    ) throws
        -> StoredCertificateAuthority
    {
        let authority: ProductCertificateAuthority
        switch (input.caCertificatePem, input.caPrivateKeyPem) {
        case (let certificate?, let key?):
            do {
                authority = try ProductCertificateAuthority.importing(certificatePEM: certificate, privateKeyPEM: key)
            } catch {
                throw AdminError(.invalidCertificateAuthority, error.description)
            }
        case (nil, nil):
            guard let keyType = CAKeyType(rawValue: input.caKeyType ?? Self.defaultCAKeyType.rawValue) else {
                throw AdminError(.invalidKeyType, "caKeyType must be p256, p384, rsa2048, rsa3072 or rsa4096")
            }
            do {
                authority = try ProductCertificateAuthority.create(productId: productId, keyType: keyType)
            } catch {
                throw AdminError(.internalError, "the CA could not be created")
            }
        default:
            throw AdminError(.invalidCertificateAuthority, "caCertificatePem and caPrivateKeyPem go together")
        }
        do {
            return try authorities.stored(authority, productId: productId, validityDays: validityDays)
        } catch {
            throw AdminError(.internalError, "the CA key could not be sealed")
        }
    }
}
