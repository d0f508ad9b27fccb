import DynRegProtocol
import DynRegTestVectors
import Foundation
import Testing

@Suite("Signed request headers and body")
struct SignedRequestHeaderTests {
    @Test("the header names are PROTOCOL.md's, byte for byte")
    func names() {
        #expect(DeviceRequestHeader.algorithm == "X-TC-Algorithm")
        #expect(DeviceRequestHeader.timestamp == "X-TC-Timestamp")
        #expect(DeviceRequestHeader.nonce == "X-TC-Nonce")
        #expect(DeviceRequestHeader.signature == "X-TC-Signature")
        #expect(DeviceRequestHeader.contentType == "Content-Type")
        #expect(DeviceRequestHeader.currentContentType == "application/json; charset=utf-8")
        #expect(DeviceRequestHeader.legacyContentType == "application/x-www-form-urlencoded")
    }

    @Test(
        "headers(productSecret:) carries the vector's fields and signature, in the SDKs' order",
        arguments: Vectors.signatures)
    func headers(vector: Vectors.Signature) throws {
        let algorithm = try #require(SignatureAlgorithm(headerValue: vector.algorithmHeader))
        let hash = try #require(BodyHash(rawValue: vector.bodyHashAlgorithm))
        let signed = SignedRequest(
            canonicalHost: vector.canonicalHost, path: vector.path, algorithm: algorithm,
            timestamp: String(vector.timestamp), nonce: String(vector.nonce), body: Array(vector.body.utf8))
        let headers = signed.headers(productSecret: vector.productSecret, bodyHash: hash)
        #expect(
            headers.map(\.0) == ["Content-Type", "X-TC-Algorithm", "X-TC-Timestamp", "X-TC-Nonce", "X-TC-Signature"])
        #expect(
            headers.map(\.1) == [
                "application/json; charset=utf-8", algorithm.name, String(vector.timestamp), String(vector.nonce),
                vector.signature,
            ])
    }

    @Test("init(registering:) signs the body the SDKs send")
    func registering() throws {
        let body = RegistrationRequestBody(productId: "ASJ1234GX", deviceName: "dev:01@x", csr: "-----BEGIN\nA\n")
        let signed = SignedRequest(
            registering: body, canonicalHost: "iot.example.com", algorithm: .hmacSHA1, timestamp: 1_551_234_565,
            nonce: 0)
        #expect(signed.body == body.encodedJSON())
        #expect(try RegistrationRequestBody(decoding: signed.body) == body)
        #expect(signed.path == RegistrationPath.current)
        #expect(signed.timestamp == "1551234565")
        #expect(signed.nonce == "0")
        let headers = signed.headers(productSecret: "0123456789abcdefXYZ")
        let signature = try #require(headers.last?.1)
        #expect(signed.verify(signature: signature, productSecret: "0123456789abcdefXYZ"))
    }

    @Test("the legacy body carries the vector's signature", arguments: Vectors.legacy)
    func legacyBody(vector: Vectors.Legacy) throws {
        let signed = LegacySignedRequest(
            productId: vector.productId, deviceName: vector.deviceName, timestamp: vector.timestamp,
            nonce: vector.nonce)
        let decoded = try LegacyRegistrationRequestBody(decoding: signed.body(productSecret: vector.productSecret))
        #expect(decoded.signed == signed)
        #expect(decoded.signature == vector.signature)
        #expect(LegacySignedRequest.headers.map(\.0) == ["Content-Type"])
        #expect(LegacySignedRequest.headers.map(\.1) == ["application/x-www-form-urlencoded"])
    }

    @Test("Hex: two lower-case digits per byte, high nibble first")
    func hex() {
        #expect(Hex.lowercase([0x00, 0x0F, 0x10, 0x7A, 0xAB, 0xFF]) == "000f107aabff")
        #expect(Hex.lowercase([UInt8]()) == "")
        let all = Hex.lowercaseBytes(UInt8.min...UInt8.max)
        #expect(all.count == 512)
        let digits = Array("0123456789abcdef".utf8)
        for byte in 0...255 {
            #expect(all[2 * byte] == digits[byte / 16] && all[2 * byte + 1] == digits[byte % 16])
        }
        var appended: [UInt8] = Array("x".utf8)
        Hex.append(0xC3, to: &appended)
        #expect(appended == Array("xc3".utf8))
    }
}
