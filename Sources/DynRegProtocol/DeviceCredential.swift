import Foundation

/// What a device receives on registration: the plaintext inside `Payload`.
public enum DeviceCredential: Sendable, Hashable {
    /// Key authentication, `encryptionType` 2: a Base64 pre-shared key.
    case key(psk: String)
    /// Certificate authentication, `encryptionType` 1: PEM certificate and PEM PKCS#8 key
    /// (the key is empty when the device sent a CSR and kept its key).
    case certificate(clientCert: String, clientKey: String)

    /// The protocol's `encryptionType` value.
    public var encryptionType: Int {
        switch self {
        case .key: return 2
        case .certificate: return 1
        }
    }

    /// The plaintext JSON, keys in protocol order, `/` not escaped, PEM newlines as `\n`.
    public func encodedJSON() -> [UInt8] {
        var writer = JSONWriter(capacity: 96)
        writer.beginObject()
        writer.field("encryptionType", encryptionType)
        switch self {
        case .key(let psk):
            writer.field("psk", psk)
        case .certificate(let clientCert, let clientKey):
            writer.field("clientCert", clientCert)
            writer.field("clientKey", clientKey)
        }
        writer.endObject()
        return writer.bytes
    }

    /// Parses the plaintext JSON of a decrypted payload.
    public init(decoding json: [UInt8]) throws(ProtocolDecodingError) {
        struct Wire: Decodable {
            var encryptionType: Int
            var psk: String?
            var clientCert: String?
            var clientKey: String?
        }
        let wire = try decodeJSON(Wire.self, json, what: "a credential: a JSON object with an encryptionType")
        switch wire.encryptionType {
        case 2:
            guard let psk = wire.psk else { throw ProtocolDecodingError("the key credential has no psk") }
            self = .key(psk: psk)
        case 1:
            guard let cert = wire.clientCert else {
                throw ProtocolDecodingError("the certificate credential has no clientCert")
            }
            self = .certificate(clientCert: cert, clientKey: wire.clientKey ?? "")
        default:
            throw ProtocolDecodingError("unknown encryptionType \(wire.encryptionType)")
        }
    }

    /// Encrypts the credential for a product: the `Len`/`Payload` pair of a success response.
    public func encrypted(productSecret: String) throws(PayloadError) -> EncryptedPayload {
        try PayloadCipher.encrypt(encodedJSON(), productSecret: productSecret)
    }
}

/// A message that could not be decoded; the reason never quotes secret material.
public struct ProtocolDecodingError: Error, Sendable, Hashable, CustomStringConvertible {
    public var reason: String
    public init(_ reason: String) { self.reason = reason }
    public var description: String { reason }
}
