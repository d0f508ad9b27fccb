import Foundation

/// MQTT connection parameters derived from a psk (PROTOCOL.md §4).
public struct MQTTCredentials: Sendable, Hashable, Codable {
    public var clientId: String
    public var username: String
    public var password: String

    public init(clientId: String, username: String, password: String) {
        self.clientId = clientId
        self.username = username
        self.password = password
    }

    /// The application id Tencent's SDKs send.
    public static let defaultAppId = "12010126"

    /// Derives `clientId`, `username` and `password`; the psk is Base64 and its decoded bytes key the HMAC.
    public static func derive(
        productId: String,
        deviceName: String,
        psk: String,
        algorithm: SignatureAlgorithm = .hmacSHA256,
        appId: String = defaultAppId,
        connId: String = randomConnectionId(),
        expiry: Int64
    ) throws(MQTTCredentialError) -> MQTTCredentials {
        guard let key = Data(base64Encoded: psk), !key.isEmpty else { throw MQTTCredentialError.pskNotBase64 }
        let clientId = productId + deviceName
        let username = "\(clientId);\(appId);\(connId);\(expiry)"
        let mac = algorithm.mac(key: key, message: Array(username.utf8))
        return MQTTCredentials(
            clientId: clientId,
            username: username,
            password: Hex.lowercase(mac) + ";" + algorithm.name
        )
    }

    /// A random 5-character connection id of letters and digits.
    public static func randomConnectionId() -> String {
        let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
        var generator = SystemRandomNumberGenerator()
        return String((0..<5).map { _ in alphabet.randomElement(using: &generator)! })
    }
}

/// The parts of an MQTT username, as a broker hook receives it.
public struct MQTTUsername: Sendable, Hashable {
    public var clientId: String
    public var appId: String
    public var connId: String
    /// Unix seconds; a millisecond value is converted.
    public var expiry: Int64

    /// Parses `clientId;appId;connId;expiry`.
    public init?(_ username: String) {
        let parts = username.split(separator: ";", omittingEmptySubsequences: false)
        guard parts.count == 4, let raw = DecimalField.parse(parts[3]) else { return nil }
        clientId = String(parts[0])
        appId = String(parts[1])
        connId = String(parts[2])
        // SDKs that send milliseconds produce 13-digit values.
        expiry = raw >= 100_000_000_000 && raw < 100_000_000_000_000 ? raw / 1000 : raw
    }
}

extension MQTTCredentials {
    /// Checks a broker-presented username and password against a psk in constant time.
    /// The expiry is not checked here: it depends on the caller's clock.
    public static func verify(username: String, password: String, psk: String) -> Bool {
        guard let key = Data(base64Encoded: psk), !key.isEmpty else { return false }
        // On bytes: a broker asks this on every MQTT CONNECT. `signature;algorithm`, with exactly one `;`.
        let bytes = Array(password.utf8)
        guard let semicolon = bytes.firstIndex(of: UInt8(ascii: ";")),
            !bytes[(semicolon + 1)...].contains(UInt8(ascii: ";")),
            let algorithm = SignatureAlgorithm(headerValue: String(decoding: bytes[(semicolon + 1)...], as: UTF8.self))
        else { return false }
        let expected = Hex.lowercaseBytes(algorithm.mac(key: key, message: Array(username.utf8)))
        // Upper-case hex is accepted: only ASCII letters are folded, as nothing else can match a hex digit.
        let presented = bytes[..<semicolon].map(ASCII.lowercased)
        return constantTimeEquals(expected, presented)
    }
}

/// Why MQTT credentials could not be derived. A struct over a private code rather than an enum, so that reasons
/// can be added without breaking callers; compare with the static members.
public struct MQTTCredentialError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Sendable, Hashable {
        case pskNotBase64
    }

    private let code: Code
    private init(_ code: Code) { self.code = code }

    /// The psk is not standard Base64 of at least one byte.
    public static let pskNotBase64 = Self(.pskNotBase64)

    public var description: String {
        switch code {
        case .pskNotBase64: return "the psk is not valid Base64"
        }
    }
}
