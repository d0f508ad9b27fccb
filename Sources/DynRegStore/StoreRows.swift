package import Foundation

/// Models from the columns both stores keep, and the errors both stores throw: one place, so SQLite and PostgreSQL
/// cannot drift apart in what they accept from a row or what they say when something is missing.
///
/// A row that breaks the schema's rules (an unknown auth type or status, half a CA, a secret not sealed) is an error,
/// never a default: guessing would serve a product or device that nobody created.
///
/// Product secrets and psks are stored sealed under the master key (``SealedField``) and opened here: the models
/// hold them in clear, for the server and the product cache. A key that does not open them throws
/// ``MasterKeyError`` (`wrongKey`), which `dynreg serve` checks for before it listens.
package enum StoreRows {
    package static func product(
        id: String, name: String, authType: String, sealedSecret: String, dynamicRegistration: Bool, autoCreate: Bool,
        deviceQuota: Int?, allowClocklessDevices: Bool, deviceCount: Int, createdAt: Date, caCertificate: String?,
        caSealedKey: String?, caKeyType: String?, certificateValidityDays: Int?, trustedCACertificates: String?,
        topicRules: String?, deviceKeyType: String?, masterKey: MasterKey
    ) throws -> Product {
        guard let type = AuthType(rawValue: authType) else {
            throw StoreError.corruptRow(table: "products", key: id, column: "auth_type")
        }
        var authority: StoredCertificateAuthority?
        switch (caCertificate, caSealedKey, caKeyType, certificateValidityDays) {
        case (nil, nil, nil, nil):
            authority = nil
        case (let pem?, let sealed?, let keyType?, let days?):
            authority = StoredCertificateAuthority(
                certificatePEM: pem, sealedPrivateKey: sealed, keyType: keyType, certificateValidityDays: days)
        default:
            throw StoreError.corruptRow(table: "products", key: id, column: "ca_*")
        }
        var policy = TopicPolicy.default
        if let topicRules {
            guard let decoded = try? JSONDecoder().decode(TopicPolicy.self, from: Data(topicRules.utf8)) else {
                throw StoreError.corruptRow(table: "products", key: id, column: "topic_rules")
            }
            policy = decoded
        }
        guard let keyType = DeviceKeyType(rawValue: deviceKeyType ?? DeviceKeyType.p256.rawValue) else {
            throw StoreError.corruptRow(table: "products", key: id, column: "device_key_type")
        }
        let secret = try opened(
            sealedSecret, .productSecret(productId: id), masterKey, table: "products", key: id, column: "secret")
        return Product(
            id: id, name: name, authType: type, secret: secret, dynamicRegistration: dynamicRegistration,
            autoCreate: autoCreate, deviceQuota: deviceQuota, allowClocklessDevices: allowClocklessDevices,
            deviceCount: deviceCount, createdAt: createdAt, certificateAuthority: authority,
            trustedDeviceCAs: trustedCertificates(trustedCACertificates), topicPolicy: policy, deviceKeyType: keyType)
    }

    /// The topic policy column: `NULL` for Tencent's defaults alone, else the policy as JSON.
    package static func topicRulesColumn(_ policy: TopicPolicy) -> String? {
        guard policy != .default, let data = try? JSONEncoder().encode(policy) else { return nil }
        return String(decoding: data, as: UTF8.self)
    }

    /// A product's limits as stored: JSON.
    package static func limitsColumn(_ limits: ProductLimits) -> String {
        String(decoding: (try? JSONEncoder().encode(limits)) ?? Data("{}".utf8), as: UTF8.self)
    }

    package static func limits(_ text: String, productId: String) throws(StoreError) -> ProductLimits {
        guard let limits = try? JSONDecoder().decode(ProductLimits.self, from: Data(text.utf8)) else {
            throw StoreError.corruptRow(table: "product_limits", key: productId, column: "limits")
        }
        return limits
    }

    /// `NULL` for the default, P-256.
    package static func deviceKeyTypeColumn(_ type: DeviceKeyType) -> String? {
        type == .p256 ? nil : type.rawValue
    }

    /// Trusted CA certificates are kept in one column as PEM documents one after another.
    package static func trustedCertificatesColumn(_ certificates: [String]) -> String? {
        certificates.isEmpty ? nil : certificates.joined(separator: "\n")
    }

    static func trustedCertificates(_ column: String?) -> [String] {
        guard let column else { return [] }
        let end = "-----END CERTIFICATE-----"
        return column.components(separatedBy: end).dropLast().map {
            $0.trimmingCharacters(in: .whitespacesAndNewlines) + "\n" + end
        }.map { String($0.drop(while: { $0 != "-" })) }
    }

    package static func device(
        productId: String, name: String, status: String, sealedPSK: String?, createdAt: Date, registeredAt: Date?,
        activatedAt: Date?, registrationCount: Int, masterKey: MasterKey
    ) throws -> Device {
        let psk = try sealedPSK.map {
            try opened(
                $0, .psk(productId: productId, deviceName: name), masterKey, table: "devices",
                key: "\(productId)/\(name)", column: "psk")
        }
        return Device(
            productId: productId, name: name, status: try deviceStatus(status, productId: productId, name: name),
            psk: psk, createdAt: createdAt, registeredAt: registeredAt, activatedAt: activatedAt,
            registrationCount: registrationCount)
    }

    /// A value that is not sealed at all is a corrupt row (written by hand, or by a release before sealing after the
    /// migration ran); one that does not open is the wrong master key.
    private static func opened(
        _ sealed: String, _ field: SealedField, _ masterKey: MasterKey, table: String, key: String, column: String
    ) throws -> String {
        do {
            return try masterKey.open(sealed, for: field)
        } catch  where error.code == .notSealed {
            throw StoreError.corruptRow(table: table, key: key, column: column)
        }
    }

    package static func deviceStatus(
        _ raw: String, productId: String, name: String
    ) throws(StoreError)
        -> DeviceStatus
    {
        guard let status = DeviceStatus(rawValue: raw) else {
            throw StoreError.corruptRow(table: "devices", key: "\(productId)/\(name)", column: "status")
        }
        return status
    }
}

extension StoreError {
    package static func productNotFound(_ id: String) -> StoreError {
        StoreError(.productNotFound, "product \(id) does not exist")
    }

    package static func productExists(_ id: String) -> StoreError {
        StoreError(.productExists, "product \(id) already exists")
    }

    package static func deviceNotFound(_ productId: String, _ name: String) -> StoreError {
        StoreError(.deviceNotFound, "device \(name) does not exist in product \(productId)")
    }

    package static func deviceExists(_ productId: String, _ name: String) -> StoreError {
        StoreError(.deviceExists, "device \(name) already exists in product \(productId)")
    }

    package static func quotaExceeded(_ productId: String, quota: Int) -> StoreError {
        StoreError(.quotaExceeded, "product \(productId) has reached its quota of \(quota) devices")
    }

    package static func certificateNotFound(_ productId: String, serial: String) -> StoreError {
        StoreError(.certificateNotFound, "no certificate with serial \(serial) in product \(productId)")
    }

    /// A row the store cannot read back as it wrote it. Names the row and the column, never a value (it may be a
    /// secret). `unavailable`: the store cannot serve that row until an operator repairs it.
    package static func corruptRow(table: String, key: String, column: String) -> StoreError {
        StoreError(.unavailable, "corrupt row in \(table) (\(key)): \(column) is not a value the store writes")
    }

    /// An operation that came after the store stopped.
    package static let stopped = StoreError(.unavailable, "the store has stopped")
}
