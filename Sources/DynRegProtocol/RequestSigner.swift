import Crypto
import Foundation

/// The signed fields of a `POST /device/register` request (PROTOCOL.md §1).
public struct SignedRequest: Sendable, Hashable {
    /// The host the device put in its URL, without a port.
    public var canonicalHost: String
    public var path: String
    public var algorithm: SignatureAlgorithm
    /// ``DeviceRequestHeader/timestamp`` exactly as sent (decimal digits).
    public var timestamp: String
    /// ``DeviceRequestHeader/nonce`` exactly as sent (decimal digits).
    public var nonce: String
    /// The body bytes exactly as sent: never a re-serialisation.
    public var body: [UInt8]

    public init(
        canonicalHost: String,
        path: String = RegistrationPath.current,
        algorithm: SignatureAlgorithm,
        timestamp: String,
        nonce: String,
        body: [UInt8]
    ) {
        self.canonicalHost = canonicalHost
        self.path = path
        self.algorithm = algorithm
        self.timestamp = timestamp
        self.nonce = nonce
        self.body = body
    }

    /// The request a device sends to register: `body` encoded as the official SDKs encode it.
    public init(
        registering body: RegistrationRequestBody, canonicalHost: String, algorithm: SignatureAlgorithm,
        timestamp: Int64, nonce: Int64
    ) {
        self.init(
            canonicalHost: canonicalHost, algorithm: algorithm, timestamp: String(timestamp), nonce: String(nonce),
            body: body.encodedJSON())
    }

    /// The headers of this request signed with `productSecret`, in the order the SDKs send them; send `body`
    /// with them. `Host` is not among them: the HTTP client writes it from the URL.
    public func headers(productSecret: String, bodyHash: BodyHash? = nil) -> [(String, String)] {
        [
            (DeviceRequestHeader.contentType, DeviceRequestHeader.currentContentType),
            (DeviceRequestHeader.algorithm, algorithm.name),
            (DeviceRequestHeader.timestamp, timestamp),
            (DeviceRequestHeader.nonce, nonce),
            (DeviceRequestHeader.signature, signature(productSecret: productSecret, bodyHash: bodyHash)),
        ]
    }

    /// The body hash Tencent's own signing tool uses: SHA-1 for `hmacsha1`, SHA-256 otherwise.
    public var defaultBodyHash: BodyHash {
        algorithm == .hmacSHA1 ? .sha1 : .sha256
    }

    /// The string to sign, with the given body hash.
    public func stringToSign(bodyHash: BodyHash? = nil) -> String {
        String(decoding: stringToSignBytes(bodyHash: bodyHash ?? defaultBodyHash), as: UTF8.self)
    }

    func stringToSignBytes(bodyHash: BodyHash) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(160 + canonicalHost.utf8.count)
        out.append(contentsOf: "POST\n".utf8)
        out.append(contentsOf: canonicalHost.utf8)
        out.append(0x0A)
        out.append(contentsOf: path.utf8)
        out.append(0x0A)
        out.append(0x0A)  // empty query string
        out.append(contentsOf: algorithm.name.utf8)
        out.append(0x0A)
        out.append(contentsOf: timestamp.utf8)
        out.append(0x0A)
        out.append(contentsOf: nonce.utf8)
        out.append(0x0A)
        out.append(contentsOf: bodyHash.hexDigest(of: body))
        return out
    }

    /// `Base64(HMAC(productSecret, stringToSign))`.
    public func signature(productSecret: String, bodyHash: BodyHash? = nil) -> String {
        let mac = algorithm.mac(
            key: Array(productSecret.utf8),
            message: stringToSignBytes(bodyHash: bodyHash ?? defaultBodyHash)
        )
        return Data(mac).base64EncodedString()
    }

    /// Verifies a Base64 signature in constant time. For `hmacsha1` both body hashes are accepted (PROTOCOL.md §1).
    public func verify(signature: String, productSecret: String) -> Bool {
        guard let presented = Data(base64Encoded: signature) else { return false }
        let key = Array(productSecret.utf8)
        let hashes: [BodyHash] = algorithm == .hmacSHA1 ? [.sha1, .sha256] : [.sha256]
        var matched = false
        for hash in hashes {
            let expected = algorithm.mac(key: key, message: stringToSignBytes(bodyHash: hash))
            // Evaluate every candidate so timing does not reveal which one matched.
            matched = constantTimeEquals(expected, presented) || matched
        }
        return matched
    }
}

/// The two device endpoints.
public enum RegistrationPath {
    public static let current = "/device/register"
    public static let legacy = "/register/dev"
}

/// Host handling shared by signer and verifier.
public enum CanonicalHost {
    /// The host of a `Host` header without its port: `iot.example.com:8443` → `iot.example.com`, `[::1]:80` → `[::1]`.
    public static func fromHostHeader(_ header: some StringProtocol) -> String {
        let value = header.trimmingCharacters(in: .whitespaces)
        if value.hasPrefix("[") {
            if let close = value.firstIndex(of: "]") {
                return String(value[...close])
            }
            return value
        }
        if let colon = value.lastIndex(of: ":"), value.firstIndex(of: ":") == colon {
            return String(value[..<colon])
        }
        return value
    }
}
