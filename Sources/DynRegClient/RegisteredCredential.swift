public import DynRegProtocol
public import Foundation

/// A device's credential with the product and device it belongs to.
///
/// Encoded as the JSON a ``FileCredentialStore`` writes:
/// `{"productId":…,"deviceName":…,"encryptionType":2,"psk":…}` for key authentication, or
/// `{"productId":…,"deviceName":…,"encryptionType":1,"clientCert":…,"clientKey":…}` for certificates,
/// plus `requestId` when known.
///
/// `description` and `dump` hide the psk and the private key, so a credential can be logged safely.
public struct RegisteredCredential: Sendable, Hashable, Codable {
    /// The product the device belongs to.
    public var productId: String
    /// The device's name within the product.
    public var deviceName: String
    /// The credential the platform issued: a psk or a certificate and key.
    public var credential: DeviceCredential
    /// The platform's request id for the registration that issued the credential, when known.
    public var requestId: String?

    /// A credential for a device; `requestId` is `nil` when not known.
    public init(productId: String, deviceName: String, credential: DeviceCredential, requestId: String? = nil) {
        self.productId = productId
        self.deviceName = deviceName
        self.credential = credential
        self.requestId = requestId
    }

    /// The Base64 pre-shared key of key authentication, `nil` for a certificate.
    public var psk: String? {
        if case .key(let psk) = credential { return psk }
        return nil
    }

    /// The MQTT client id, username and password for a key credential (PROTOCOL.md §4); `nil` for a certificate,
    /// which authenticates with TLS instead.
    ///
    /// - Parameters:
    ///   - expiry: When the password stops being valid.
    ///   - algorithm: The HMAC the password is signed with.
    ///   - appId: The SDK application id put in the username.
    ///   - connId: The 5-character connection id; random by default.
    /// - Throws: `MQTTCredentialError` when the psk is not Base64.
    public func mqttCredentials(
        expiry: Date,
        algorithm: SignatureAlgorithm = .hmacSHA256,
        appId: String = MQTTCredentials.defaultAppId,
        connId: String = MQTTCredentials.randomConnectionId()
    ) throws(MQTTCredentialError) -> MQTTCredentials? {
        guard let psk else { return nil }
        return try MQTTCredentials.derive(
            productId: productId, deviceName: deviceName, psk: psk, algorithm: algorithm, appId: appId,
            connId: connId, expiry: Int64(expiry.timeIntervalSince1970.rounded(.down)))
    }

    private enum CodingKeys: String, CodingKey {
        case productId, deviceName, encryptionType, psk, clientCert, clientKey, requestId
    }

    /// Reads the stored JSON format.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        productId = try container.decode(String.self, forKey: .productId)
        deviceName = try container.decode(String.self, forKey: .deviceName)
        requestId = try container.decodeIfPresent(String.self, forKey: .requestId)
        let encryptionType = try container.decode(Int.self, forKey: .encryptionType)
        switch encryptionType {
        case 2:
            credential = .key(psk: try container.decode(String.self, forKey: .psk))
        case 1:
            credential = .certificate(
                clientCert: try container.decode(String.self, forKey: .clientCert),
                clientKey: try container.decodeIfPresent(String.self, forKey: .clientKey) ?? "")
        default:
            throw DecodingError.dataCorruptedError(
                forKey: .encryptionType, in: container,
                debugDescription: "encryptionType must be 1 (certificate) or 2 (key), not \(encryptionType)")
        }
    }

    /// Writes the stored JSON format.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(productId, forKey: .productId)
        try container.encode(deviceName, forKey: .deviceName)
        try container.encode(credential.encryptionType, forKey: .encryptionType)
        switch credential {
        case .key(let psk):
            try container.encode(psk, forKey: .psk)
        case .certificate(let clientCert, let clientKey):
            try container.encode(clientCert, forKey: .clientCert)
            try container.encode(clientKey, forKey: .clientKey)
        }
        try container.encodeIfPresent(requestId, forKey: .requestId)
    }
}

extension RegisteredCredential: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    private var kind: String {
        switch credential {
        case .key: return "key"
        case .certificate: return "certificate"
        }
    }

    /// Product, device and kind of credential; never the psk or the private key.
    public var description: String {
        "RegisteredCredential(productId: \(productId), deviceName: \(deviceName), \(kind), secret material redacted)"
    }

    /// The same as ``description``.
    public var debugDescription: String { description }

    /// Leaves out the psk and the private key, for `dump`.
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "productId": productId, "deviceName": deviceName, "encryptionType": credential.encryptionType,
                "requestId": requestId as Any,
            ])
    }
}
