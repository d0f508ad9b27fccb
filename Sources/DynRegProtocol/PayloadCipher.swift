import Crypto
import Foundation
import _CryptoExtras

/// An encrypted credential as it travels: `Payload` and `Len`.
public struct EncryptedPayload: Sendable, Hashable {
    /// The plaintext length before zero padding.
    public var length: Int
    /// Standard Base64 of the AES-128-CBC ciphertext.
    public var payload: String

    public init(length: Int, payload: String) {
        (self.length, self.payload) = (length, payload)
    }
}

/// Why a payload could not be encrypted or decrypted. Descriptions never include key material.
///
/// A struct over a private code rather than an enum, so that reasons can be added without breaking callers;
/// compare with the static members (`error == .notBase64`) or switch over them.
public struct PayloadError: Error, Sendable, Hashable, CustomStringConvertible {
    private enum Code: Sendable, Hashable {
        case productSecretTooShort
        case notBase64
        case notBlockAligned
        case invalidLength
        case decryptionFailed
        case encryptionFailed
    }

    private let code: Code
    private init(_ code: Code) { self.code = code }

    /// The product secret is shorter than the 16 bytes that key the cipher.
    public static let productSecretTooShort = Self(.productSecretTooShort)
    /// `Payload` is not standard Base64.
    public static let notBase64 = Self(.notBase64)
    /// The ciphertext is not a whole number of AES blocks.
    public static let notBlockAligned = Self(.notBlockAligned)
    /// `Len` is negative or longer than the plaintext.
    public static let invalidLength = Self(.invalidLength)
    /// The cipher refused the ciphertext.
    public static let decryptionFailed = Self(.decryptionFailed)
    /// The cipher refused the plaintext.
    public static let encryptionFailed = Self(.encryptionFailed)

    public var description: String {
        switch code {
        case .productSecretTooShort:
            return "the product secret must be at least \(ProductSecretRules.minimumLength) characters"
        case .notBase64: return "the payload is not valid Base64"
        case .notBlockAligned: return "the payload is not a multiple of 16 bytes, so it is not an AES-CBC ciphertext"
        case .invalidLength: return "Len is negative or larger than the decrypted payload"
        case .decryptionFailed: return "the payload could not be decrypted"
        case .encryptionFailed: return "the payload could not be encrypted"
        }
    }
}

/// AES-128-CBC with the first 16 bytes of the product secret, an IV of sixteen ASCII `0` and zero padding.
public enum PayloadCipher {
    static let blockSize = 16
    private static let iv: [UInt8] = Array(repeating: UInt8(ascii: "0"), count: 16)

    private static func key(productSecret: String) throws(PayloadError) -> SymmetricKey {
        let bytes = Array(productSecret.utf8)
        guard bytes.count >= blockSize else { throw PayloadError.productSecretTooShort }
        return SymmetricKey(data: bytes[0..<blockSize])
    }

    /// Zero-pads to the next multiple of 16 (nothing when already aligned) and encrypts.
    public static func encrypt(
        _ plaintext: some Collection<UInt8>, productSecret: String
    ) throws(PayloadError)
        -> EncryptedPayload
    {
        let key = try key(productSecret: productSecret)
        var padded = Array(plaintext)
        let remainder = padded.count % blockSize
        if remainder != 0 {
            padded.append(contentsOf: repeatElement(0, count: blockSize - remainder))
        }
        // BoringSSL refuses an empty input; zero padding of nothing is nothing.
        if padded.isEmpty { return EncryptedPayload(length: 0, payload: "") }
        do {
            let ciphertext = try AES._CBC.encrypt(padded, using: key, iv: AES._CBC.IV(ivBytes: iv), noPadding: true)
            return EncryptedPayload(length: plaintext.count, payload: ciphertext.base64EncodedString())
        } catch {
            throw PayloadError.encryptionFailed
        }
    }

    /// Decrypts and trims to `length`; without a length, strips trailing NUL bytes as the Python SDK does.
    public static func decrypt(payload: String, length: Int?, productSecret: String) throws(PayloadError) -> [UInt8] {
        let key = try key(productSecret: productSecret)
        guard let ciphertext = Data(base64Encoded: payload) else { throw PayloadError.notBase64 }
        guard ciphertext.count % blockSize == 0 else { throw PayloadError.notBlockAligned }
        let plaintext: [UInt8]
        if ciphertext.isEmpty {
            plaintext = []
        } else {
            do {
                plaintext = Array(
                    try AES._CBC.decrypt(ciphertext, using: key, iv: AES._CBC.IV(ivBytes: iv), noPadding: true))
            } catch {
                throw PayloadError.decryptionFailed
            }
        }
        if let length {
            guard length >= 0, length <= plaintext.count else { throw PayloadError.invalidLength }
            return Array(plaintext[0..<length])
        }
        var end = plaintext.count
        while end > 0, plaintext[end - 1] == 0 { end -= 1 }
        return Array(plaintext[0..<end])
    }
}
