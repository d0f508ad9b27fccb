import Foundation

/// The known-answer vectors of `../shared/test-vectors`, copied once into this target's resources (see
/// Resources/PROVENANCE.md) so that a fresh clone tests on its own. Every test target that checks them reads
/// them from here.
package enum Vectors {
    package static func load<T: Decodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Resources") else {
            throw VectorError.missing(name)
        }
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    package enum VectorError: Error { case missing(String) }

    package struct Signature: Decodable, Sendable, CustomTestStringConvertibleShim {
        package var name: String
        package var productSecret: String
        package var hostHeader: String
        package var canonicalHost: String
        package var path: String
        package var algorithmHeader: String
        package var timestamp: Int64
        package var nonce: Int64
        package var body: String
        package var bodyHashAlgorithm: String
        package var bodyHashHex: String
        package var stringToSign: String
        package var signature: String
    }

    package struct Legacy: Decodable, Sendable, CustomTestStringConvertibleShim {
        package var name: String
        package var productSecret: String
        package var deviceName: String
        package var nonce: Int64
        package var productId: String
        package var timestamp: Int64
        package var stringToSign: String
        package var signature: String
    }

    package struct Payload: Decodable, Sendable, CustomTestStringConvertibleShim {
        package var name: String
        package var productSecret: String
        package var plaintext: String
        package var len: Int
        package var payload: String
    }

    package struct MQTT: Decodable, Sendable, CustomTestStringConvertibleShim {
        package var name: String
        package var psk: String
        package var productId: String
        package var deviceName: String
        package var appId: String
        package var connId: String
        package var expiry: Int64
        package var algorithm: String
        package var clientId: String
        package var username: String
        package var password: String
    }

    package static var signatures: [Signature] { (try? load("signature-v2")) ?? [] }
    package static var legacy: [Legacy] { (try? load("signature-legacy")) ?? [] }
    package static var payloads: [Payload] { (try? load("payload")) ?? [] }
    package static var mqtt: [MQTT] { (try? load("mqtt-credentials")) ?? [] }
}

package protocol CustomTestStringConvertibleShim: CustomStringConvertible {
    var name: String { get }
}

extension CustomTestStringConvertibleShim {
    package var description: String { name }
}
