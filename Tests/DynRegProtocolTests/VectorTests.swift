import DynRegProtocol
import DynRegTestVectors
import Foundation
import Testing

@Suite("Known-answer vectors")
struct VectorTests {
    @Test("every vector file loads and is not empty")
    func filesLoad() throws {
        #expect(try Vectors.load("signature-v2", as: [Vectors.Signature].self).count == 5)
        #expect(try Vectors.load("signature-legacy", as: [Vectors.Legacy].self).count == 2)
        #expect(try Vectors.load("payload", as: [Vectors.Payload].self).count == 4)
        #expect(try Vectors.load("mqtt-credentials", as: [Vectors.MQTT].self).count == 2)
    }

    private func request(_ vector: Vectors.Signature) throws -> SignedRequest {
        let algorithm = try #require(SignatureAlgorithm(headerValue: vector.algorithmHeader))
        return SignedRequest(
            canonicalHost: CanonicalHost.fromHostHeader(vector.hostHeader),
            path: vector.path,
            algorithm: algorithm,
            timestamp: String(vector.timestamp),
            nonce: String(vector.nonce),
            body: Array(vector.body.utf8)
        )
    }

    @Test("v2 string to sign, signature and verification", arguments: Vectors.signatures)
    func signatureV2(vector: Vectors.Signature) throws {
        let signed = try request(vector)
        #expect(signed.canonicalHost == vector.canonicalHost)
        let hash = try #require(BodyHash(rawValue: vector.bodyHashAlgorithm))
        #expect(signed.stringToSign(bodyHash: hash) == vector.stringToSign)
        #expect(signed.signature(productSecret: vector.productSecret, bodyHash: hash) == vector.signature)
        #expect(signed.verify(signature: vector.signature, productSecret: vector.productSecret))
        #expect(!signed.verify(signature: vector.signature, productSecret: vector.productSecret + "x"))
    }

    @Test("hmacsha1 signs with a SHA-1 body hash by default, as Tencent's tool does")
    func sha1DefaultBodyHash() throws {
        let vector = try #require(Vectors.signatures.first { $0.name == "sha1" })
        let signed = try request(vector)
        #expect(signed.signature(productSecret: vector.productSecret) == vector.signature)
    }

    @Test("hmacsha256 never accepts a SHA-1 body hash")
    func sha256RejectsSHA1BodyHash() throws {
        let vector = try #require(Vectors.signatures.first { $0.name == "seed-example" })
        let signed = try request(vector)
        let sha1Signed = signed.signature(productSecret: vector.productSecret, bodyHash: .sha1)
        #expect(!signed.verify(signature: sha1Signed, productSecret: vector.productSecret))
    }

    @Test("legacy signature is Base64 of the hex digest", arguments: Vectors.legacy)
    func legacy(vector: Vectors.Legacy) {
        let signed = LegacySignedRequest(
            productId: vector.productId, deviceName: vector.deviceName,
            timestamp: vector.timestamp, nonce: vector.nonce)
        #expect(signed.stringToSign == vector.stringToSign)
        #expect(signed.signature(productSecret: vector.productSecret) == vector.signature)
        #expect(signed.verify(signature: vector.signature, productSecret: vector.productSecret))
        // The trap: Base64 of the raw digest must not verify.
        let raw = Data(base64Encoded: vector.signature).flatMap { hex -> Data? in
            let text = String(decoding: hex, as: UTF8.self)
            var bytes: [UInt8] = []
            var index = text.startIndex
            while index < text.endIndex {
                let next = text.index(index, offsetBy: 2)
                guard let byte = UInt8(text[index..<next], radix: 16) else { return nil }
                bytes.append(byte)
                index = next
            }
            return Data(bytes)
        }
        #expect(raw != nil)
        #expect(!signed.verify(signature: raw!.base64EncodedString(), productSecret: vector.productSecret))
    }

    @Test("payload encrypt and decrypt", arguments: Vectors.payloads)
    func payload(vector: Vectors.Payload) throws {
        let encrypted = try PayloadCipher.encrypt(Array(vector.plaintext.utf8), productSecret: vector.productSecret)
        #expect(encrypted.length == vector.len)
        #expect(encrypted.payload == vector.payload)
        let decrypted = try PayloadCipher.decrypt(
            payload: vector.payload, length: vector.len, productSecret: vector.productSecret)
        #expect(String(decoding: decrypted, as: UTF8.self) == vector.plaintext)
        // Without Len, trailing NULs are stripped as the Python SDK does.
        let stripped = try PayloadCipher.decrypt(
            payload: vector.payload, length: nil, productSecret: vector.productSecret)
        #expect(String(decoding: stripped, as: UTF8.self) == vector.plaintext)
    }

    @Test("credential JSON reproduces the vector plaintexts byte for byte", arguments: Vectors.payloads)
    func credentialEncoding(vector: Vectors.Payload) throws {
        let credential = try DeviceCredential(decoding: Array(vector.plaintext.utf8))
        #expect(String(decoding: credential.encodedJSON(), as: UTF8.self) == vector.plaintext)
        let encrypted = try credential.encrypted(productSecret: vector.productSecret)
        #expect(encrypted.payload == vector.payload)
    }

    @Test("MQTT credentials", arguments: Vectors.mqtt)
    func mqtt(vector: Vectors.MQTT) throws {
        let algorithm = try #require(SignatureAlgorithm(headerValue: vector.algorithm))
        let credentials = try MQTTCredentials.derive(
            productId: vector.productId, deviceName: vector.deviceName, psk: vector.psk,
            algorithm: algorithm, appId: vector.appId, connId: vector.connId, expiry: vector.expiry)
        #expect(credentials.clientId == vector.clientId)
        #expect(credentials.username == vector.username)
        #expect(credentials.password == vector.password)
        #expect(MQTTCredentials.verify(username: vector.username, password: vector.password, psk: vector.psk))
        #expect(!MQTTCredentials.verify(username: vector.username + "1", password: vector.password, psk: vector.psk))
        // The password's shape: upper-case hex and algorithm names pass; a second `;`, no `;`, or another
        // algorithm do not.
        let (signature, name) = try #require(vector.password.split(separator: ";").map(String.init).pairs)
        for good in [signature.uppercased() + ";" + name, signature + ";" + name.uppercased()] {
            #expect(MQTTCredentials.verify(username: vector.username, password: good, psk: vector.psk))
        }
        let other = name.lowercased() == "hmacsha256" ? "hmacsha1" : "hmacsha256"
        for bad in [
            signature + ";" + name + ";", signature, signature + ";" + other, ";" + name, signature + "0;" + name,
        ] {
            #expect(!MQTTCredentials.verify(username: vector.username, password: bad, psk: vector.psk), "\(bad)")
        }
        let parsed = try #require(MQTTUsername(vector.username))
        #expect(parsed.clientId == vector.clientId)
        #expect(parsed.expiry == vector.expiry)
    }
}

extension Array {
    /// The two elements of a two-element array.
    fileprivate var pairs: (Element, Element)? { count == 2 ? (self[0], self[1]) : nil }
}
