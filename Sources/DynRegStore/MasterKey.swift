import Crypto
import DynRegProtocol
package import Foundation

/// The server master key: seals every secret the stores keep (CA private keys, product secrets, psks) with
/// AES-256-GCM, each bound to its place by ``SealedField``.
///
/// Every instance sharing a database must use the same key (`DYNREG_MASTER_KEY`). One implementation for every
/// sealed value: the server seals CA keys with it, the stores seal product secrets and psks.
package struct MasterKey: Sendable {
    private let key: SymmetricKey

    /// Parses 32 bytes given as Base64 or 64 hex digits.
    package init(encoded: String) throws(MasterKeyError) {
        let text = encoded.trimmingCharacters(in: .whitespacesAndNewlines)
        if let data = Data(base64Encoded: text), data.count == 32 {
            key = SymmetricKey(data: data)
        } else if text.utf8.count == 64, text.allSatisfy(\.isHexDigit) {
            key = SymmetricKey(data: Hex.bytes(text))
        } else {
            throw MasterKeyError(.malformed)
        }
    }

    /// A new random key, and its Base64 form.
    package static func generate() -> (key: MasterKey, encoded: String) {
        let data = SymmetricKey(size: .bits256).withUnsafeBytes { Data($0) }
        let encoded = data.base64EncodedString()
        return (try! MasterKey(encoded: encoded), encoded)
    }

    private static let prefix = "v1:"

    /// `v1:` and the Base64 of nonce, ciphertext and tag. A random 96-bit nonce per value: NIST's bound for random
    /// nonces (2^32 values under one key) is far beyond a store's psks, and rotating the key starts it again.
    package func seal(_ plaintext: String, for field: SealedField) throws -> String {
        let box = try AES.GCM.seal(Data(plaintext.utf8), using: key, authenticating: field.associatedData)
        return Self.prefix + box.combined!.base64EncodedString()
    }

    /// The plaintext of a value ``seal(_:for:)`` made for the same field; `notSealed` for anything else, `wrongKey`
    /// when the key, the field or the value is not the one it was sealed with.
    package func open(_ sealed: String, for field: SealedField) throws(MasterKeyError) -> String {
        guard sealed.hasPrefix(Self.prefix), let data = Data(base64Encoded: String(sealed.dropFirst(Self.prefix.count)))
        else {
            throw MasterKeyError(.notSealed, field.kind)
        }
        do {
            let box = try AES.GCM.SealedBox(combined: data)
            let plaintext = try AES.GCM.open(box, using: key, authenticating: field.associatedData)
            return String(decoding: plaintext, as: UTF8.self)
        } catch {
            throw MasterKeyError(.wrongKey, field.kind)
        }
    }

    /// Whether `value` has the sealed form (says nothing of the key).
    package static func isSealed(_ value: String) -> Bool { value.hasPrefix(prefix) }
}

/// What a sealed value is and which row holds it: the associated data of its AES-GCM seal. A value opens only as
/// what it was sealed for, so a database writer cannot move a psk to another device, a product secret to another
/// product, or one column's value into another.
package enum SealedField: Sendable, Hashable {
    /// A certificate product's CA private key (`products.ca_sealed_key`).
    case caKey(productId: String)
    /// `products.secret`.
    case productSecret(productId: String)
    /// `devices.psk`.
    case psk(productId: String, deviceName: String)

    package enum Kind: Sendable, Hashable {
        case caKey
        case productSecret
        case psk
    }

    package var kind: Kind {
        switch self {
        case .caKey: return .caKey
        case .productSecret: return .productSecret
        case .psk: return .psk
        }
    }

    /// A CA key's is its product id alone, as releases before sealed secrets wrote it (their sealed keys open
    /// unchanged). The others are a label and then each part after its length (4 bytes, big-endian), so no two
    /// fields share bytes whatever their ids hold; no product id (letters and digits) is one of them.
    var associatedData: Data {
        switch self {
        case .caKey(let productId): return Data(productId.utf8)
        case .productSecret(let productId): return Self.labelled("dynreg products.secret", [productId])
        case .psk(let productId, let deviceName): return Self.labelled("dynreg devices.psk", [productId, deviceName])
        }
    }

    private static func labelled(_ label: String, _ parts: [String]) -> Data {
        var data = Data(label.utf8)
        for part in parts {
            let bytes = Array(part.utf8)
            withUnsafeBytes(of: UInt32(bytes.count).bigEndian) { data.append(contentsOf: $0) }
            data.append(contentsOf: bytes)
        }
        return data
    }
}

package struct MasterKeyError: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Code: Sendable, Hashable {
        case malformed
        case notSealed
        case wrongKey
    }

    package var code: Code
    /// What could not be opened; `nil` for a malformed key.
    package var field: SealedField.Kind?

    package init(_ code: Code, _ field: SealedField.Kind? = nil) {
        self.code = code
        self.field = field
    }

    package var description: String {
        let what: String
        switch field {
        case .caKey, nil: what = "CA keys"
        case .productSecret: what = "product secrets"
        case .psk: what = "device psks"
        }
        switch code {
        case .malformed: return "the master key must be 32 bytes as Base64 or 64 hex digits"
        case .notSealed: return "one of the stored \(what) is not in the sealed format"
        case .wrongKey:
            return "the master key does not open the stored \(what): this is not the key they were sealed with"
        }
    }
}
