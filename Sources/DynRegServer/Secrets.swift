import Crypto
import DynRegProtocol
import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// Every key, secret, identifier and token comes from the system CSPRNG.
package enum Secrets {
    private static let upperAlphanumerics = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789".utf8)
    private static let alphanumerics = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789".utf8)

    private static func string(length: Int, alphabet: [UInt8]) -> String {
        var generator = SystemRandomNumberGenerator()
        return String(decoding: (0..<length).map { _ in alphabet.randomElement(using: &generator)! }, as: UTF8.self)
    }

    /// Every product id is this long; the broker hooks split client ids (product id + device name) on it.
    package static let productIdLength = 10

    /// Ten upper-case letters and digits, the shape of a Tencent product id.
    package static func productId() -> String { string(length: productIdLength, alphabet: upperAlphanumerics) }

    /// 24 letters and digits (~143 bits); its first 16 bytes key the payload cipher.
    package static func productSecret() -> String { string(length: 24, alphabet: alphanumerics) }

    /// Base64 of 16 random bytes.
    package static func psk() -> String { Data(randomBytes(16)).base64EncodedString() }

    /// 43 characters of URL-safe Base64 (256 bits).
    package static func adminToken() -> String {
        Data(randomBytes(32)).base64EncodedString()
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    package static func randomBytes(_ count: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        #if canImport(Glibc)
        // One getrandom(2) for the whole buffer (glibc 2.36), where the generator makes one for every 8 bytes: a
        // registration needs 32 bytes, and the system calls showed in its profile.
        bytes.withUnsafeMutableBytes { buffer in
            if let base = buffer.baseAddress { arc4random_buf(base, buffer.count) }
        }
        #else
        var generator = SystemRandomNumberGenerator()
        var index = 0
        while index < count {
            var word = generator.next()
            for _ in 0..<8 where index < count {
                bytes[index] = UInt8(truncatingIfNeeded: word)
                word >>= 8
                index += 1
            }
        }
        #endif
        return bytes
    }

    /// A random (version 4) UUID in lower case, the shape of Tencent's `RequestId`; built from the bytes directly
    /// because `uuidString.lowercased()` showed up in the registration profile.
    package static func requestId() -> String {
        let bytes = randomBytes(16)
        var text = [UInt8]()
        text.reserveCapacity(36)
        for (index, byte) in bytes.enumerated() {
            var value = byte
            if index == 6 { value = 0x40 | (value & 0x0f) }
            if index == 8 { value = 0x80 | (value & 0x3f) }
            if index == 4 || index == 6 || index == 8 || index == 10 { text.append(UInt8(ascii: "-")) }
            Hex.append(value, to: &text)
        }
        return String(decoding: text, as: UTF8.self)
    }
}

/// A token as the server keeps it to check what clients present (the admin and broker tokens): its SHA-256,
/// compared in constant time with the digest of what was presented, so neither the content nor the length of a
/// wrong token shows in the time of the answer.
struct TokenDigest: Sendable {
    private let digest: [UInt8]

    init(_ token: String) { digest = Array(SHA256.hash(data: Array(token.utf8))) }

    func matches(_ presented: [UInt8]) -> Bool { constantTimeEquals(Array(SHA256.hash(data: presented)), digest) }

    /// Who acted, for the audit log: the first 4 bytes of the digest in hex. It tells tokens apart and reveals
    /// nothing that helps to guess one.
    var fingerprint: String { Hex.lowercase(digest.prefix(4)) }
}
