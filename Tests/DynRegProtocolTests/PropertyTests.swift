import DynRegProtocol
import Foundation
import PropertyBased
import Testing

private let secret = "hzvf5LF9S0isvBhDSauWMaIk"

@Suite("Properties")
struct PropertyTests {
    @Test("encrypt then decrypt returns the plaintext, 0–4096 bytes")
    func roundTrip() async {
        await propertyCheck(count: 300, input: Gen.uint8().array(of: 0...4096)) { plaintext in
            let encrypted = try PayloadCipher.encrypt(plaintext, productSecret: secret)
            #expect(encrypted.length == plaintext.count)
            let decrypted = try PayloadCipher.decrypt(
                payload: encrypted.payload, length: encrypted.length, productSecret: secret)
            #expect(decrypted == plaintext)
        }
    }

    @Test("credential JSON round-trips any text (control characters, quotes, backslashes, non-ASCII), '/' unescaped")
    func credentialJSONRoundTrip() async {
        let text = Gen.unicodeScalar(in: "\u{0}"..."\u{2FF}").map(Character.init).string(of: 0...300)
        await propertyCheck(count: 300, input: text, text) { certificate, key throws in
            let credential = DeviceCredential.certificate(clientCert: certificate + "/", clientKey: key)
            let json = credential.encodedJSON()
            #expect(try DeviceCredential(decoding: json) == credential)
            // Every '/' is written as itself: the C SDK does not unescape "\\/".
            let slash = UInt8(ascii: "/")
            #expect(json.filter { $0 == slash }.count == (certificate + "/" + key).utf8.filter { $0 == slash }.count)
        }
    }

    @Test("a signature never verifies after one byte of body, host, timestamp or nonce changes")
    func tamperedSignatures() async {
        let base = SignedRequest(
            canonicalHost: "ap-guangzhou.gateway.tencentdevices.com", algorithm: .hmacSHA256,
            timestamp: "1551234565", nonce: "5456", body: Array(#"{"ProductId":"ASJ1234GX","DeviceName":"xyz"}"#.utf8))
        await propertyCheck(
            count: 400,
            input: Gen.int(in: 0...3), Gen.int(in: 0...1000), Gen.uint8(in: 1...255),
            Gen<SignatureAlgorithm>.case
        ) { field, position, delta, algorithm in
            var original = base
            original.algorithm = algorithm
            let signature = original.signature(productSecret: secret)
            var tampered = original
            func flip(_ bytes: [UInt8]) -> [UInt8] {
                var copy = bytes
                let index = position % copy.count
                copy[index] = copy[index] &+ delta
                return copy
            }
            switch field {
            case 0: tampered.body = flip(tampered.body)
            case 1: tampered.canonicalHost = String(decoding: flip(Array(tampered.canonicalHost.utf8)), as: UTF8.self)
            case 2: tampered.timestamp = String(decoding: flip(Array(tampered.timestamp.utf8)), as: UTF8.self)
            default: tampered.nonce = String(decoding: flip(Array(tampered.nonce.utf8)), as: UTF8.self)
            }
            #expect(original.verify(signature: signature, productSecret: secret))
            #expect(!tampered.verify(signature: signature, productSecret: secret))
        }
    }

    @Test("legacy signature never verifies after one field changes")
    func tamperedLegacy() async {
        await propertyCheck(count: 300, input: Gen.int64(in: 0...Int64(Int32.max)), Gen.int64(in: 1...1000)) {
            nonce, delta in
            let signed = LegacySignedRequest(
                productId: "ASJ1234GX", deviceName: "xyz", timestamp: 1_551_234_565, nonce: nonce)
            let signature = signed.signature(productSecret: secret)
            var tampered = signed
            tampered.nonce = nonce + delta
            #expect(signed.verify(signature: signature, productSecret: secret))
            #expect(!tampered.verify(signature: signature, productSecret: secret))
        }
    }
}

/// Random bytes into every decoder: each must return or throw, never trap.
@Suite("Fuzz: decoders never trap")
struct FuzzTests {
    @Test("random bytes")
    func randomBytes() async {
        await propertyCheck(count: 2000, input: Gen.uint8().array(of: 0...300)) { bytes in
            let text = String(decoding: bytes, as: UTF8.self)
            _ = try? PayloadCipher.decrypt(payload: text, length: nil, productSecret: secret)
            _ = try? PayloadCipher.decrypt(
                payload: Data(bytes).base64EncodedString(), length: bytes.count, productSecret: secret)
            _ = try? PayloadCipher.decrypt(
                payload: Data(bytes).base64EncodedString(), length: nil, productSecret: secret)
            _ = try? DeviceCredential(decoding: bytes)
            _ = try? RegistrationRequestBody(decoding: bytes)
            _ = try? LegacyRegistrationRequestBody(decoding: bytes)
            _ = try? RegistrationReply(decoding: bytes)
            _ = try? LegacyRegistrationReply(decoding: bytes)
            _ = MQTTUsername(text)
            _ = MQTTCredentials.verify(username: text, password: text, psk: text)
            _ = try? MQTTCredentials.derive(productId: text, deviceName: text, psk: text, expiry: 0)
            _ = SignatureAlgorithm(headerValue: text)
            _ = DecimalField.parse(text)
            _ = CanonicalHost.fromHostHeader(text)
            _ = DeviceNameRules.isValid(text)
            _ = LegacySignedRequest(productId: text, deviceName: text, timestamp: 1, nonce: 1)
                .verify(signature: text, productSecret: secret)
            _ = SignedRequest(canonicalHost: text, algorithm: .hmacSHA1, timestamp: text, nonce: text, body: bytes)
                .verify(signature: text, productSecret: text)
        }
    }

    @Test("JSON-shaped random input")
    func jsonShaped() async {
        let fragments = [
            "{", "}", "\"ProductId\"", "\"DeviceName\"", ":", ",", "\"x\"", "1", "-1", "1e400", "null",
            "true", "[", "]", "\"Response\"", "\"Error\"", "\"Len\"", "\"Payload\"", "\"code\"", "\"nonce\"",
            "\"\\u0000\"", "\"\\ud800\"", "99999999999999999999999",
        ]
        await propertyCheck(count: 2000, input: Gen.element(of: fragments).array(of: 0...30)) { parts in
            let bytes = Array(parts.compactMap { $0 }.joined().utf8)
            _ = try? RegistrationRequestBody(decoding: bytes)
            _ = try? LegacyRegistrationRequestBody(decoding: bytes)
            _ = try? RegistrationReply(decoding: bytes)
            _ = try? LegacyRegistrationReply(decoding: bytes)
            _ = try? DeviceCredential(decoding: bytes)
        }
    }
}
