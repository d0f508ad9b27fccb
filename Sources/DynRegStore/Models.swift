package import DynRegProtocol
package import Foundation

/// How a product's devices authenticate; fixed when the product is created.
package enum AuthType: String, Sendable, Codable, Hashable, CaseIterable {
    /// Key authentication: devices receive a psk (`encryptionType` 2).
    case key
    /// Certificate authentication: devices receive a certificate and key (`encryptionType` 1).
    case certificate
}

/// A product: a family of devices sharing one product secret.
package struct Product: Sendable, Hashable {
    package var id: String
    package var name: String
    package var authType: AuthType
    package var secret: String
    package var dynamicRegistration: Bool
    package var autoCreate: Bool
    /// The most devices the product may hold; `nil` for no limit.
    package var deviceQuota: Int?
    /// Admit devices without a clock (`X-TC-Timestamp: 0`).
    package var allowClocklessDevices: Bool
    package var deviceCount: Int
    package var createdAt: Date
    /// The CA of a certificate-auth product; `nil` for key-auth products.
    package var certificateAuthority: StoredCertificateAuthority?
    /// Operator CA certificates (PEM) that vouch for certificates devices bring themselves (`ClientCert`).
    package var trustedDeviceCAs: [String]
    /// The MQTT topics its devices may use.
    package var topicPolicy: TopicPolicy
    /// The key a certificate product makes for a device that sends no CSR.
    package var deviceKeyType: DeviceKeyType

    package init(
        id: String, name: String, authType: AuthType, secret: String, dynamicRegistration: Bool, autoCreate: Bool,
        deviceQuota: Int?, allowClocklessDevices: Bool, deviceCount: Int, createdAt: Date,
        certificateAuthority: StoredCertificateAuthority? = nil, trustedDeviceCAs: [String] = [],
        topicPolicy: TopicPolicy = .default, deviceKeyType: DeviceKeyType = .p256
    ) {
        self.id = id
        self.name = name
        self.authType = authType
        self.secret = secret
        self.dynamicRegistration = dynamicRegistration
        self.autoCreate = autoCreate
        self.deviceQuota = deviceQuota
        self.allowClocklessDevices = allowClocklessDevices
        self.deviceCount = deviceCount
        self.createdAt = createdAt
        self.certificateAuthority = certificateAuthority
        self.trustedDeviceCAs = trustedDeviceCAs
        self.topicPolicy = topicPolicy
        self.deviceKeyType = deviceKeyType
    }
}

/// The key type of server-made device keys: P-256 by default, RSA-2048 for Tencent's Java SDK (it loads
/// `clientKey` with `KeyFactory.getInstance("RSA")`).
package enum DeviceKeyType: String, Sendable, Hashable, Codable, CaseIterable {
    case p256
    case rsa2048
}

/// A product CA as stored: the private key only ever sealed under the server's master key.
package struct StoredCertificateAuthority: Sendable, Hashable {
    package var certificatePEM: String
    /// The CA private key, encrypted at rest; opaque to the store.
    package var sealedPrivateKey: String
    package var keyType: String
    /// Validity of the device certificates this CA issues.
    package var certificateValidityDays: Int

    package init(certificatePEM: String, sealedPrivateKey: String, keyType: String, certificateValidityDays: Int) {
        self.certificatePEM = certificatePEM
        self.sealedPrivateKey = sealedPrivateKey
        self.keyType = keyType
        self.certificateValidityDays = certificateValidityDays
    }
}

/// A device certificate the product CA issued. The device's private key is never stored.
package struct DeviceCertificate: Sendable, Hashable {
    /// Lower-case hex of the serial number.
    package var serial: String
    package var productId: String
    package var deviceName: String
    /// Lower-case hex SHA-256 of the DER certificate.
    package var fingerprint: String
    package var pem: String
    package var notBefore: Date
    package var notAfter: Date
    package var issuedAt: Date
    package var revokedAt: Date?

    package init(
        serial: String, productId: String, deviceName: String, fingerprint: String, pem: String, notBefore: Date,
        notAfter: Date, issuedAt: Date, revokedAt: Date? = nil
    ) {
        self.serial = serial
        self.productId = productId
        self.deviceName = deviceName
        self.fingerprint = fingerprint
        self.pem = pem
        self.notBefore = notBefore
        self.notAfter = notAfter
        self.issuedAt = issuedAt
        self.revokedAt = revokedAt
    }
}

/// The credential a registration issues.
package enum IssuedCredential: Sendable, Hashable {
    case key(psk: String)
    /// A new certificate; previous unrevoked certificates of the device are revoked in the same transaction.
    case certificate(DeviceCertificate)
    /// The device registers again with the certificate of its own that it already registered: nothing changes.
    case certificateKept

    /// The psk a key-auth device gets; `nil` for a certificate.
    package var psk: String? {
        if case .key(let psk) = self { return psk }
        return nil
    }
}

/// The switches an operator may change after creation.
package struct ProductUpdate: Sendable, Hashable {
    package var name: String?
    package var dynamicRegistration: Bool?
    package var autoCreate: Bool?
    /// `.some(nil)` removes the quota.
    package var deviceQuota: Int??
    package var allowClocklessDevices: Bool?
    /// Replaces the list; a certificate product's only.
    package var trustedDeviceCAs: [String]?
    package var topicPolicy: TopicPolicy?
    /// A certificate product's only.
    package var deviceKeyType: DeviceKeyType?

    package init(
        name: String? = nil, dynamicRegistration: Bool? = nil, autoCreate: Bool? = nil, deviceQuota: Int?? = nil,
        allowClocklessDevices: Bool? = nil, trustedDeviceCAs: [String]? = nil, topicPolicy: TopicPolicy? = nil,
        deviceKeyType: DeviceKeyType? = nil
    ) {
        self.name = name
        self.dynamicRegistration = dynamicRegistration
        self.autoCreate = autoCreate
        self.deviceQuota = deviceQuota
        self.allowClocklessDevices = allowClocklessDevices
        self.trustedDeviceCAs = trustedDeviceCAs
        self.topicPolicy = topicPolicy
        self.deviceKeyType = deviceKeyType
    }
}

/// A device's lifecycle: created (by an operator) → registered (holds a credential) → activated (has connected).
package enum DeviceStatus: String, Sendable, Codable, Hashable, CaseIterable {
    case created
    case registered
    case activated
}

package struct Device: Sendable, Hashable {
    package var productId: String
    package var name: String
    package var status: DeviceStatus
    /// The current psk of a key-auth device; `nil` until it registers.
    package var psk: String?
    package var createdAt: Date
    package var registeredAt: Date?
    package var activatedAt: Date?
    package var registrationCount: Int

    package init(
        productId: String, name: String, status: DeviceStatus, psk: String?, createdAt: Date, registeredAt: Date?,
        activatedAt: Date?, registrationCount: Int
    ) {
        self.productId = productId
        self.name = name
        self.status = status
        self.psk = psk
        self.createdAt = createdAt
        self.registeredAt = registeredAt
        self.activatedAt = activatedAt
        self.registrationCount = registrationCount
    }
}

/// A registration request that passed every check the store cannot make (signature, window, switches).
package struct RegistrationAttempt: Sendable, Hashable {
    package var productId: String
    package var deviceName: String
    package var timestamp: Int64
    package var nonce: Int64
    /// When the (timestamp, nonce) pair may be forgotten; `nil` keeps it until the device is activated
    /// (devices without a clock, whose replay protection rests on the nonce alone).
    package var replayExpiry: Date?
    /// The credential to issue if the registration is admitted.
    package var credential: IssuedCredential
    package var now: Date
    /// The peer and the endpoint, for the audit event the store writes in the same transaction as its decision.
    package var remoteAddress: String
    package var endpoint: String
    /// What a byte-identical repeat of this request gets: kept with the replay entry, and purged with it.
    package var repeatable: RepeatableRequest?

    package init(
        productId: String, deviceName: String, timestamp: Int64, nonce: Int64, replayExpiry: Date?,
        credential: IssuedCredential, now: Date, remoteAddress: String = "", endpoint: String = "",
        repeatable: RepeatableRequest? = nil
    ) {
        self.productId = productId
        self.deviceName = deviceName
        self.timestamp = timestamp
        self.nonce = nonce
        self.replayExpiry = replayExpiry
        self.credential = credential
        self.now = now
        self.remoteAddress = remoteAddress
        self.endpoint = endpoint
        self.repeatable = repeatable
    }

    /// The audit event for `decision`. Product id and device name are bounded: the log must not become a way to
    /// store arbitrary data.
    package func event(for decision: RegistrationDecision) -> RegistrationEvent {
        let outcome: String
        switch decision {
        case .issued: outcome = RegistrationEvent.success
        case .repeated: outcome = RegistrationEvent.retry
        case .rejected(let code): outcome = code.code
        }
        return RegistrationEvent(
            time: now, productId: AuditField.bounded(productId), deviceName: AuditField.bounded(deviceName),
            outcome: outcome, remoteAddress: remoteAddress, endpoint: endpoint)
    }
}

/// What a device sent, as the audit log keeps it: printable ASCII as is (every valid product id and device name),
/// anything else as `\xNN` per UTF-8 byte (and `\` as `\\`), cut to `maxBytes` bytes. So a stored field is
/// ASCII, at most `maxBytes` long whatever it held (one Character can be kilobytes of combining marks), and never
/// raw control bytes.
package enum AuditField {
    package static let maxBytes = 64

    package static func bounded(_ value: String, maxBytes: Int = maxBytes) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(min(value.utf8.count, maxBytes))
        for byte in value.utf8 {
            let plain = byte >= 0x20 && byte < 0x7F && byte != UInt8(ascii: "\\")
            let width = plain ? 1 : (byte == UInt8(ascii: "\\") ? 2 : 4)
            guard out.count + width <= maxBytes else { break }
            if plain {
                out.append(byte)
            } else if byte == UInt8(ascii: "\\") {
                out += [byte, byte]
            } else {
                out += Array("\\x".utf8)
                out += hexDigits(byte)
            }
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static func hexDigits(_ byte: UInt8) -> [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        return [digits[Int(byte >> 4)], digits[Int(byte & 0x0F)]]
    }
}

/// The store's decision on a registration: expected outcomes are values, not errors.
package enum RegistrationDecision: Sendable, Hashable {
    /// Committed durably: the device holds the new credential. `created`: this registration created the device.
    case issued(Device, created: Bool)
    /// A byte-identical repeat of an admitted request whose credential is still the device's: its first answer.
    case repeated(RegistrationAnswer)
    case rejected(RegistrationErrorCode)
}

/// A request's identity for retries, and the answer it got.
package struct RepeatableRequest: Sendable, Hashable {
    /// SHA-256 over the endpoint, the signing headers and the body, as received.
    package var digest: [UInt8]
    /// The encrypted credential the request is answered with.
    package var payload: EncryptedPayload

    package init(digest: [UInt8], payload: EncryptedPayload) {
        self.digest = digest
        self.payload = payload
    }
}

/// The first answer to a request, as a retry gets it again.
package struct RegistrationAnswer: Sendable, Hashable {
    package var payload: EncryptedPayload
    /// Whether that registration created the device (IoT Hub's `State` 0).
    package var created: Bool

    package init(payload: EncryptedPayload, created: Bool) {
        self.payload = payload
        self.created = created
    }
}

/// One line of the audit log.
package struct RegistrationEvent: Sendable, Hashable {
    package var id: Int64
    package var time: Date
    package var productId: String
    package var deviceName: String
    /// `Success` or an error code.
    package var outcome: String
    package var remoteAddress: String
    package var endpoint: String

    package init(
        id: Int64 = 0, time: Date, productId: String, deviceName: String, outcome: String, remoteAddress: String,
        endpoint: String
    ) {
        self.id = id
        self.time = time
        self.productId = productId
        self.deviceName = deviceName
        self.outcome = outcome
        self.remoteAddress = remoteAddress
        self.endpoint = endpoint
    }

    /// The outcome of an admitted registration.
    package static let success = "Success"
    /// The outcome of a byte-identical repeat answered with the first answer: nothing new was issued.
    package static let retry = "Retry"
}

/// Which events to read: newest first, before the event `before` (a cursor), optionally since a time, of one outcome
/// or one device.
package struct EventQuery: Sendable, Hashable {
    package var limit: Int
    package var before: Int64?
    package var since: Date?
    package var outcome: String?
    package var deviceName: String?
    /// Looks at no more than the newest this many events of the log (every product's), so that a filter few
    /// events match costs a bounded scan; `nil` for the whole log.
    package var scanLimit: Int?

    package init(
        limit: Int, before: Int64? = nil, since: Date? = nil, outcome: String? = nil, deviceName: String? = nil,
        scanLimit: Int? = nil
    ) {
        self.limit = limit
        self.before = before
        self.since = since
        self.outcome = outcome
        self.deviceName = deviceName
        self.scanLimit = scanLimit
    }
}

/// Registration events of one outcome in one minute, over every product.
package struct OutcomeMinute: Sendable, Hashable {
    /// The start of the minute.
    package var minute: Date
    package var outcome: String
    package var count: Int

    package init(minute: Date, outcome: String, count: Int) {
        self.minute = minute
        self.outcome = outcome
        self.count = count
    }
}

/// What one retention sweep removed.
package struct AuditPurge: Sendable, Hashable {
    package var events = 0
    package var refusals = 0

    package init(events: Int = 0, refusals: Int = 0) {
        self.events = events
        self.refusals = refusals
    }
}

/// How many requests were refused one way in one minute, before the product secret was proven: kept as one row a
/// minute rather than a row a request, so that nobody without a secret can grow the store by sending junk.
package struct RefusalCount: Sendable, Hashable {
    /// The start of the minute.
    package var minute: Date
    /// The product the request named when it exists (a wrong signature); empty for an unknown product or none.
    package var productId: String
    package var endpoint: String
    /// The error code.
    package var outcome: String
    package var remoteAddress: String
    package var count: Int

    package init(
        minute: Date, productId: String, endpoint: String, outcome: String, remoteAddress: String, count: Int
    ) {
        self.minute = minute
        self.productId = productId
        self.endpoint = endpoint
        self.outcome = outcome
        self.remoteAddress = remoteAddress
        self.count = count
    }
}

/// A product's own brakes on registrations, kept in a table of their own beside the product.
package struct ProductLimits: Sendable, Hashable, Codable {
    /// Registrations a second and the burst above it (a token bucket); `nil`: the server's default.
    package var registrationRate: RegistrationRate?
    /// New device names an hour that auto-create may add (the burst brake); `nil`: no brake.
    package var newDevicesPerHour: Int?

    package init(registrationRate: RegistrationRate? = nil, newDevicesPerHour: Int? = nil) {
        self.registrationRate = registrationRate
        self.newDevicesPerHour = newDevicesPerHour
    }
}

/// A token bucket: `perSecond` tokens a second, holding at most `burst`. `perSecond` 0 means no limit.
package struct RegistrationRate: Sendable, Hashable, Codable {
    package var perSecond: Double
    package var burst: Int

    package init(perSecond: Double, burst: Int) {
        self.perSecond = perSecond
        self.burst = burst
    }

    package var isUnlimited: Bool { perSecond <= 0 }
}

/// An address refused for one product after repeated wrong signatures, until `lockedUntil`.
package struct Lockout: Sendable, Hashable {
    package var productId: String
    package var remoteAddress: String
    /// The wrong signatures that led to it.
    package var failures: Int
    package var lockedAt: Date
    package var lockedUntil: Date

    package init(productId: String, remoteAddress: String, failures: Int, lockedAt: Date, lockedUntil: Date) {
        self.productId = productId
        self.remoteAddress = remoteAddress
        self.failures = failures
        self.lockedAt = lockedAt
        self.lockedUntil = lockedUntil
    }
}

/// Why a store operation other than registration failed.
package struct StoreError: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Code: String, Sendable, Hashable {
        case productNotFound
        case deviceNotFound
        case deviceExists
        case productExists
        case quotaExceeded
        case certificateNotFound
        case invalidInput
        case unavailable
    }

    package var code: Code
    package var message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    package var description: String { message }
}
