import Crypto
import Foundation

/// The HMAC named by `X-TC-Algorithm` (and by the MQTT password suffix).
public enum SignatureAlgorithm: String, Sendable, CaseIterable, Hashable, Codable {
    case hmacSHA256 = "hmacsha256"
    case hmacSHA1 = "hmacsha1"

    /// Parses a header value, ignoring case as deployed SDKs vary (`HmacSha256`).
    public init?(headerValue: some StringProtocol) {
        switch headerValue.lowercased() {
        case "hmacsha256": self = .hmacSHA256
        case "hmacsha1": self = .hmacSHA1
        default: return nil
        }
    }

    /// The lower-case name written into the string to sign.
    public var name: String { rawValue }

    func mac(key: some ContiguousBytes, message: some DataProtocol) -> [UInt8] {
        let symmetricKey = SymmetricKey(data: key)
        switch self {
        case .hmacSHA256:
            return Array(HMAC<SHA256>.authenticationCode(for: message, using: symmetricKey))
        case .hmacSHA1:
            return Array(HMAC<Insecure.SHA1>.authenticationCode(for: message, using: symmetricKey))
        }
    }
}

/// The digest applied to the raw request body before it enters the string to sign.
public enum BodyHash: String, Sendable, CaseIterable, Hashable {
    case sha256
    case sha1

    func hexDigest(of body: some DataProtocol) -> [UInt8] {
        switch self {
        case .sha256: return Hex.lowercaseBytes(SHA256.hash(data: body))
        case .sha1: return Hex.lowercaseBytes(Insecure.SHA1.hash(data: body))
        }
    }
}
