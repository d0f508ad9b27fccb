import Foundation

/// Loads a known-answer vector file from the test bundle.
enum Vectors {
    static func load<T: Decodable>(_ name: String, as type: T.Type = T.self) throws -> T {
        guard let url = Bundle.module.url(forResource: name, withExtension: "json", subdirectory: "Resources") else {
            throw VectorError.missing(name)
        }
        return try JSONDecoder().decode(T.self, from: Data(contentsOf: url))
    }

    enum VectorError: Error { case missing(String) }

    struct Signature: Decodable, Sendable, CustomTestStringConvertibleShim {
        var name: String
        var productSecret: String
        var hostHeader: String
        var canonicalHost: String
        var path: String
        var algorithmHeader: String
        var timestamp: Int64
        var nonce: Int64
        var body: String
        var bodyHashAlgorithm: String
        var bodyHashHex: String
        var stringToSign: String
        var signature: String
    }

    struct Legacy: Decodable, Sendable, CustomTestStringConvertibleShim {
        var name: String
        var productSecret: String
        var deviceName: String
        var nonce: Int64
        var productId: String
        var timestamp: Int64
        var stringToSign: String
        var signature: String
    }

    struct Payload: Decodable, Sendable, CustomTestStringConvertibleShim {
        var name: String
        var productSecret: String
        var plaintext: String
        var len: Int
        var payload: String
    }

    struct MQTT: Decodable, Sendable, CustomTestStringConvertibleShim {
        var name: String
        var psk: String
        var productId: String
        var deviceName: String
        var appId: String
        var connId: String
        var expiry: Int64
        var algorithm: String
        var clientId: String
        var username: String
        var password: String
    }

    static var signatures: [Signature] { (try? load("signature-v2")) ?? [] }
    static var legacy: [Legacy] { (try? load("signature-legacy")) ?? [] }
    static var payloads: [Payload] { (try? load("payload")) ?? [] }
    static var mqtt: [MQTT] { (try? load("mqtt-credentials")) ?? [] }
}

protocol CustomTestStringConvertibleShim: CustomStringConvertible {
    var name: String { get }
}

extension CustomTestStringConvertibleShim {
    var description: String { name }
}
