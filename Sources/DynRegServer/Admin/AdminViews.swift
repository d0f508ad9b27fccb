package import DynRegStore
package import Foundation

// The admin API's JSON, defined once: the server encodes these and `dynreg` decodes them, so a renamed field
// breaks the build or a test instead of printing `-`. Dates are ISO 8601 strings (whole seconds) on both ends.

/// A product as the admin API shows it. `productSecret` is left out of lists.
package struct ProductView: Codable, Sendable, Hashable {
    package var productId: String
    package var name: String
    package var authType: AuthType
    package var productSecret: String?
    package var dynamicRegistration: Bool
    package var autoCreate: Bool
    /// `null` (not absent) when unlimited.
    package var deviceQuota: Int?
    package var allowClocklessDevices: Bool
    package var deviceCount: Int
    package var createdAt: Date
    /// Certificate products only.
    package var caKeyType: String?
    /// Certificate products only.
    package var certificateValidityDays: Int?
    /// Certificate products only: operator CAs (PEM) that vouch for certificates devices bring.
    package var trustedCaCertificatePems: [String]?
    /// The MQTT topics the product's devices may use.
    package var topicRules: TopicPolicy
    /// Certificate products only: the key made for a device that sends no CSR.
    package var deviceKeyType: DeviceKeyType?
    /// The product's own registration rate; `null` for the server's default.
    package var registrationRate: RegistrationRate?
    /// The new-device brake; `null` when off.
    package var newDevicesPerHour: Int?

    package init(_ product: Product, includeSecret: Bool, limits: ProductLimits = ProductLimits()) {
        registrationRate = limits.registrationRate
        newDevicesPerHour = limits.newDevicesPerHour
        productId = product.id
        name = product.name
        authType = product.authType
        productSecret = includeSecret ? product.secret : nil
        dynamicRegistration = product.dynamicRegistration
        autoCreate = product.autoCreate
        deviceQuota = product.deviceQuota
        allowClocklessDevices = product.allowClocklessDevices
        deviceCount = product.deviceCount
        createdAt = product.createdAt
        caKeyType = product.certificateAuthority?.keyType
        certificateValidityDays = product.certificateAuthority?.certificateValidityDays
        trustedCaCertificatePems = product.authType == .certificate ? product.trustedDeviceCAs : nil
        topicRules = product.topicPolicy
        deviceKeyType = product.authType == .certificate ? product.deviceKeyType : nil
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        productId = try container.decode(String.self, forKey: .productId)
        name = try container.decode(String.self, forKey: .name)
        authType = try container.decode(AuthType.self, forKey: .authType)
        productSecret = try container.decodeIfPresent(String.self, forKey: .productSecret)
        dynamicRegistration = try container.decode(Bool.self, forKey: .dynamicRegistration)
        autoCreate = try container.decode(Bool.self, forKey: .autoCreate)
        // Always sent, so a missing key is an error rather than "unlimited".
        deviceQuota = try container.decode(Int?.self, forKey: .deviceQuota)
        allowClocklessDevices = try container.decode(Bool.self, forKey: .allowClocklessDevices)
        deviceCount = try container.decode(Int.self, forKey: .deviceCount)
        createdAt = try container.decode(Date.self, forKey: .createdAt)
        caKeyType = try container.decodeIfPresent(String.self, forKey: .caKeyType)
        certificateValidityDays = try container.decodeIfPresent(Int.self, forKey: .certificateValidityDays)
        trustedCaCertificatePems = try container.decodeIfPresent([String].self, forKey: .trustedCaCertificatePems)
        topicRules = try container.decode(TopicPolicy.self, forKey: .topicRules)
        deviceKeyType = try container.decodeIfPresent(DeviceKeyType.self, forKey: .deviceKeyType)
        registrationRate = try container.decodeIfPresent(RegistrationRate.self, forKey: .registrationRate)
        newDevicesPerHour = try container.decodeIfPresent(Int.self, forKey: .newDevicesPerHour)
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(productId, forKey: .productId)
        try container.encode(name, forKey: .name)
        try container.encode(authType, forKey: .authType)
        try container.encodeIfPresent(productSecret, forKey: .productSecret)
        try container.encode(dynamicRegistration, forKey: .dynamicRegistration)
        try container.encode(autoCreate, forKey: .autoCreate)
        try container.encode(deviceQuota, forKey: .deviceQuota)
        try container.encode(allowClocklessDevices, forKey: .allowClocklessDevices)
        try container.encode(deviceCount, forKey: .deviceCount)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encodeIfPresent(caKeyType, forKey: .caKeyType)
        try container.encodeIfPresent(certificateValidityDays, forKey: .certificateValidityDays)
        try container.encodeIfPresent(trustedCaCertificatePems, forKey: .trustedCaCertificatePems)
        try container.encode(topicRules, forKey: .topicRules)
        try container.encodeIfPresent(deviceKeyType, forKey: .deviceKeyType)
        try container.encode(registrationRate, forKey: .registrationRate)
        try container.encode(newDevicesPerHour, forKey: .newDevicesPerHour)
    }

    enum CodingKeys: String, CodingKey {
        case productId, name, authType, productSecret, dynamicRegistration, autoCreate, deviceQuota
        case allowClocklessDevices, deviceCount, createdAt, caKeyType, certificateValidityDays
        case trustedCaCertificatePems, topicRules, deviceKeyType, registrationRate, newDevicesPerHour
    }
}

package struct ProductList: Codable, Sendable, Hashable {
    package var products: [ProductView]
}

/// A device; `registeredAt` and `activatedAt` are absent until they happen.
package struct DeviceView: Codable, Sendable, Hashable {
    package var productId: String
    package var deviceName: String
    package var status: DeviceStatus
    package var createdAt: Date
    package var registeredAt: Date?
    package var activatedAt: Date?
    package var registrationCount: Int

    package init(_ device: Device) {
        productId = device.productId
        deviceName = device.name
        status = device.status
        createdAt = device.createdAt
        registeredAt = device.registeredAt
        activatedAt = device.activatedAt
        registrationCount = device.registrationCount
    }
}

/// A page of devices; `nextCursor` is `null` (not absent) on the last page.
package struct DeviceList: Codable, Sendable, Hashable {
    package var devices: [DeviceView]
    package var nextCursor: String?

    package init(devices: [DeviceView], nextCursor: String?) {
        self.devices = devices
        self.nextCursor = nextCursor
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        devices = try container.decode([DeviceView].self, forKey: .devices)
        nextCursor = try container.decode(String?.self, forKey: .nextCursor)
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(devices, forKey: .devices)
        try container.encode(nextCursor, forKey: .nextCursor)
    }

    enum CodingKeys: String, CodingKey { case devices, nextCursor }
}

/// One registration attempt from the audit log.
package struct EventView: Codable, Sendable, Hashable {
    /// Increasing: the cursor of the events API.
    package var id: Int64
    package var time: Date
    package var productId: String
    package var deviceName: String
    package var outcome: String
    package var remoteAddress: String
    package var endpoint: String

    package init(_ event: RegistrationEvent) {
        id = event.id
        time = event.time
        productId = event.productId
        deviceName = event.deviceName
        outcome = event.outcome
        remoteAddress = event.remoteAddress
        endpoint = event.endpoint
    }
}

package struct EventList: Codable, Sendable, Hashable {
    package var events: [EventView]
    /// The id to pass as `before` for older events; absent on the last page.
    package var nextCursor: String?
}

/// Requests refused in one minute before any secret was proven; `productId` is empty when they named no known product.
package struct RefusalView: Codable, Sendable, Hashable {
    package var minute: Date
    package var productId: String
    package var endpoint: String
    package var outcome: String
    package var remoteAddress: String
    package var count: Int

    package init(_ count: RefusalCount) {
        minute = count.minute
        productId = count.productId
        endpoint = count.endpoint
        outcome = count.outcome
        remoteAddress = count.remoteAddress
        self.count = count.count
    }
}

package struct RefusalList: Codable, Sendable, Hashable {
    package var refusals: [RefusalView]
}

/// The limits members of a product's creation or PATCH body: absent leaves them, `null` clears them.
package struct ProductLimitsInput: Codable, Sendable, Hashable {
    package var registrationRate: RegistrationRate??
    package var newDevicesPerHour: Int??

    package init(registrationRate: RegistrationRate?? = nil, newDevicesPerHour: Int?? = nil) {
        self.registrationRate = registrationRate
        self.newDevicesPerHour = newDevicesPerHour
    }

    enum CodingKeys: String, CodingKey { case registrationRate, newDevicesPerHour }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        registrationRate = try container.decodeNullable(RegistrationRate.self, forKey: .registrationRate)
        newDevicesPerHour = try container.decodeNullable(Int.self, forKey: .newDevicesPerHour)
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeNullable(registrationRate, forKey: .registrationRate)
        try container.encodeNullable(newDevicesPerHour, forKey: .newDevicesPerHour)
    }

    var isEmpty: Bool { registrationRate == nil && newDevicesPerHour == nil }

    /// `limits` with what this input sets.
    func applied(to limits: ProductLimits) -> ProductLimits {
        var limits = limits
        if let rate = registrationRate { limits.registrationRate = rate }
        if let perHour = newDevicesPerHour { limits.newDevicesPerHour = perHour }
        return limits
    }
}

/// An address locked out of a product after repeated wrong signatures.
package struct LockoutView: Codable, Sendable, Hashable {
    package var remoteAddress: String
    package var failures: Int
    package var lockedAt: Date
    package var lockedUntil: Date

    package init(_ lockout: Lockout) {
        remoteAddress = lockout.remoteAddress
        failures = lockout.failures
        lockedAt = lockout.lockedAt
        lockedUntil = lockout.lockedUntil
    }
}

package struct LockoutList: Codable, Sendable, Hashable {
    package var lockouts: [LockoutView]
}

/// A device certificate; `revokedAt` is absent while it is valid.
package struct CertificateView: Codable, Sendable, Hashable {
    package var serial: String
    package var deviceName: String
    package var fingerprint: String
    package var notBefore: Date
    package var notAfter: Date
    package var issuedAt: Date
    package var revokedAt: Date?
    /// `valid` or `revoked`.
    package var status: String
    package var certificatePem: String

    package init(_ certificate: DeviceCertificate) {
        serial = certificate.serial
        deviceName = certificate.deviceName
        fingerprint = certificate.fingerprint
        notBefore = certificate.notBefore
        notAfter = certificate.notAfter
        issuedAt = certificate.issuedAt
        revokedAt = certificate.revokedAt
        status = certificate.revokedAt == nil ? "valid" : "revoked"
        certificatePem = certificate.pem
    }
}

package struct CertificateList: Codable, Sendable, Hashable {
    package var certificates: [CertificateView]
    /// The serial to pass as `after` for the next page; absent on the last.
    package var nextCursor: String?
}

/// `{"error":{"code":…,"message":…}}`, the body of every admin failure.
package struct AdminErrorBody: Codable, Sendable, Hashable {
    package struct Detail: Codable, Sendable, Hashable {
        package var code: String
        package var message: String
    }

    package var error: Detail

    package init(code: String, message: String) {
        error = Detail(code: code, message: message)
    }
}

// MARK: Request bodies

/// `POST /products`; absent fields take the defaults of `ProductAdministration`.
package struct ProductCreateInput: Codable, Sendable, Hashable {
    package var name: String?
    package var authType: AuthType?
    package var dynamicRegistration: Bool?
    package var autoCreate: Bool?
    /// Absent (`nil`): the default quota; `.some(nil)` (JSON `null`): no quota; `.some(n)`: at most n devices.
    package var deviceQuota: Int??
    package var allowClocklessDevices: Bool?
    package var caKeyType: String?
    package var certificateValidityDays: Int?
    package var caCertificatePem: String?
    package var caPrivateKeyPem: String?
    /// Operator CA certificates, without their keys, that vouch for certificates devices bring (`ClientCert`).
    package var trustedCaCertificatePems: [String]?
    package var topicRules: TopicPolicy?
    package var deviceKeyType: DeviceKeyType?

    package init(
        name: String? = nil, authType: AuthType? = nil, dynamicRegistration: Bool? = nil, autoCreate: Bool? = nil,
        deviceQuota: Int?? = nil, allowClocklessDevices: Bool? = nil, caKeyType: String? = nil,
        certificateValidityDays: Int? = nil, caCertificatePem: String? = nil, caPrivateKeyPem: String? = nil,
        trustedCaCertificatePems: [String]? = nil, topicRules: TopicPolicy? = nil, deviceKeyType: DeviceKeyType? = nil
    ) {
        self.name = name
        self.authType = authType
        self.dynamicRegistration = dynamicRegistration
        self.autoCreate = autoCreate
        self.deviceQuota = deviceQuota
        self.allowClocklessDevices = allowClocklessDevices
        self.caKeyType = caKeyType
        self.certificateValidityDays = certificateValidityDays
        self.caCertificatePem = caCertificatePem
        self.caPrivateKeyPem = caPrivateKeyPem
        self.trustedCaCertificatePems = trustedCaCertificatePems
        self.topicRules = topicRules
        self.deviceKeyType = deviceKeyType
    }

    enum CodingKeys: String, CodingKey {
        case name, authType, dynamicRegistration, autoCreate, deviceQuota, allowClocklessDevices, caKeyType
        case certificateValidityDays, caCertificatePem, caPrivateKeyPem, trustedCaCertificatePems, topicRules
        case deviceKeyType
    }

    /// Only `deviceQuota` needs this: an absent key and `null` mean different things.
    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decodeIfPresent(String.self, forKey: .name)
        authType = try container.decodeIfPresent(AuthType.self, forKey: .authType)
        dynamicRegistration = try container.decodeIfPresent(Bool.self, forKey: .dynamicRegistration)
        autoCreate = try container.decodeIfPresent(Bool.self, forKey: .autoCreate)
        deviceQuota = try container.decodeNullable(Int.self, forKey: .deviceQuota)
        allowClocklessDevices = try container.decodeIfPresent(Bool.self, forKey: .allowClocklessDevices)
        caKeyType = try container.decodeIfPresent(String.self, forKey: .caKeyType)
        certificateValidityDays = try container.decodeIfPresent(Int.self, forKey: .certificateValidityDays)
        caCertificatePem = try container.decodeIfPresent(String.self, forKey: .caCertificatePem)
        caPrivateKeyPem = try container.decodeIfPresent(String.self, forKey: .caPrivateKeyPem)
        trustedCaCertificatePems = try container.decodeIfPresent([String].self, forKey: .trustedCaCertificatePems)
        topicRules = try container.decodeIfPresent(TopicPolicy.self, forKey: .topicRules)
        deviceKeyType = try container.decodeIfPresent(DeviceKeyType.self, forKey: .deviceKeyType)
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(name, forKey: .name)
        try container.encodeIfPresent(authType, forKey: .authType)
        try container.encodeIfPresent(dynamicRegistration, forKey: .dynamicRegistration)
        try container.encodeIfPresent(autoCreate, forKey: .autoCreate)
        try container.encodeNullable(deviceQuota, forKey: .deviceQuota)
        try container.encodeIfPresent(allowClocklessDevices, forKey: .allowClocklessDevices)
        try container.encodeIfPresent(caKeyType, forKey: .caKeyType)
        try container.encodeIfPresent(certificateValidityDays, forKey: .certificateValidityDays)
        try container.encodeIfPresent(caCertificatePem, forKey: .caCertificatePem)
        try container.encodeIfPresent(caPrivateKeyPem, forKey: .caPrivateKeyPem)
        try container.encodeIfPresent(trustedCaCertificatePems, forKey: .trustedCaCertificatePems)
        try container.encodeIfPresent(topicRules, forKey: .topicRules)
        try container.encodeIfPresent(deviceKeyType, forKey: .deviceKeyType)
    }
}

/// `PATCH /products/{productId}` is the store's `ProductUpdate`: absent fields stay as they are, and a `null`
/// quota removes it, which is why the double optional needs its own coding.
extension ProductUpdate: Codable {
    enum CodingKeys: String, CodingKey {
        case name, dynamicRegistration, autoCreate, deviceQuota, allowClocklessDevices
        case trustedDeviceCAs = "trustedCaCertificatePems"
        case topicPolicy = "topicRules"
        case deviceKeyType
    }

    package init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            name: try container.decodeIfPresent(String.self, forKey: .name),
            dynamicRegistration: try container.decodeIfPresent(Bool.self, forKey: .dynamicRegistration),
            autoCreate: try container.decodeIfPresent(Bool.self, forKey: .autoCreate),
            allowClocklessDevices: try container.decodeIfPresent(Bool.self, forKey: .allowClocklessDevices),
            trustedDeviceCAs: try container.decodeIfPresent([String].self, forKey: .trustedDeviceCAs),
            topicPolicy: try container.decodeIfPresent(TopicPolicy.self, forKey: .topicPolicy),
            deviceKeyType: try container.decodeIfPresent(DeviceKeyType.self, forKey: .deviceKeyType))
        deviceQuota = try container.decodeNullable(Int.self, forKey: .deviceQuota)
    }

    package func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encodeIfPresent(name, forKey: .name)
        try container.encodeIfPresent(dynamicRegistration, forKey: .dynamicRegistration)
        try container.encodeIfPresent(autoCreate, forKey: .autoCreate)
        try container.encodeNullable(deviceQuota, forKey: .deviceQuota)
        try container.encodeIfPresent(allowClocklessDevices, forKey: .allowClocklessDevices)
        try container.encodeIfPresent(trustedDeviceCAs, forKey: .trustedDeviceCAs)
        try container.encodeIfPresent(topicPolicy, forKey: .topicPolicy)
        try container.encodeIfPresent(deviceKeyType, forKey: .deviceKeyType)
    }
}

/// Members where an absent key and `null` differ (`deviceQuota`: the default, or no quota at all).
extension KeyedDecodingContainer {
    /// `nil` when the key is absent, `.some(nil)` for `null`.
    func decodeNullable<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T?? {
        contains(key) ? .some(try decodeIfPresent(T.self, forKey: key)) : nil
    }
}

extension KeyedEncodingContainer {
    /// Nothing for `nil`, `null` for `.some(nil)`.
    mutating func encodeNullable<T: Encodable>(_ value: T??, forKey key: Key) throws {
        if case .some(let inner) = value { try encode(inner, forKey: key) }
    }
}

/// `POST /products/{productId}/devices`.
package struct DeviceCreateInput: Codable, Sendable, Hashable {
    package var deviceName: String

    package init(deviceName: String) { self.deviceName = deviceName }
}
