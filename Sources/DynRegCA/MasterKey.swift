import Crypto
import Foundation

/// The server master key: seals CA private keys at rest with AES-256-GCM.
///
/// Every instance sharing a database must use the same key (`DYNREG_MASTER_KEY`).
package struct MasterKey: Sendable {
    private let key: SymmetricKey

    /// Parses 32 bytes given as Base64 or 64 hex digits.
    package init(encoded: String) throws(MasterKeyError) {
        let text = encoded.trimmingCharacters(in: .whitespacesAndNewlines)
        if let data = Data(base64Encoded: text), data.count == 32 {
            key = SymmetricKey(data: data)
        } else if text.utf8.count == 64, text.allSatisfy(\.isHexDigit) {
            key = SymmetricKey(data: unhex(text))
        } else {
            throw MasterKeyError(.malformed)
        }
    }

    /// A new random key.
    package static func generate() -> (key: MasterKey, encoded: String) {
        let data = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
        let encoded = data.base64EncodedString()
        return (try! MasterKey(encoded: encoded), encoded)
    }

    /// Encrypts `plaintext`, binding it to `context` (the product id) so a sealed key cannot be moved to another product.
    package func seal(_ plaintext: String, context: String) throws -> String {
        let box = try AES.GCM.seal(Data(plaintext.utf8), using: key, authenticating: Data(context.utf8))
        return "v1:" + box.combined!.base64EncodedString()
    }

    package func open(_ sealed: String, context: String) throws(MasterKeyError) -> String {
        guard sealed.hasPrefix("v1:"), let data = Data(base64Encoded: String(sealed.dropFirst(3))) else {
            throw MasterKeyError(.notSealed)
        }
        do {
            let box = try AES.GCM.SealedBox(combined: data)
            let plaintext = try AES.GCM.open(box, using: key, authenticating: Data(context.utf8))
            return String(decoding: plaintext, as: UTF8.self)
        } catch {
            throw MasterKeyError(.wrongKey)
        }
    }
}

package struct MasterKeyError: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Code: Sendable, Hashable {
        case malformed
        case notSealed
        case wrongKey
    }

    package var code: Code
    package init(_ code: Code) { self.code = code }

    package var description: String {
        switch code {
        case .malformed: return "the master key must be 32 bytes as Base64 or 64 hex digits"
        case .notSealed: return "the stored CA key is not in the sealed format"
        case .wrongKey:
            return "the master key does not open the stored CA keys: this is not the key they were sealed with"
        }
    }
}
