import DynRegProtocol
import Foundation
import Testing

@Suite("Protocol traps")
struct ProtocolTrapTests {
    @Test("JSON never escapes '/' and writes PEM newlines as \\n")
    func slashesAndNewlines() {
        let credential = DeviceCredential.certificate(
            clientCert: "-----BEGIN CERTIFICATE-----\nAB/CD+\n-----END CERTIFICATE-----\n", clientKey: "")
        let json = String(decoding: credential.encodedJSON(), as: UTF8.self)
        #expect(!json.contains("\\/"))
        #expect(json.contains("AB/CD+"))
        #expect(json.contains("-----\\nAB"))
        #expect(
            json
                == #"{"encryptionType":1,"clientCert":"-----BEGIN CERTIFICATE-----\nAB/CD+\n-----END CERTIFICATE-----\n","clientKey":""}"#
        )
        let psk = DeviceCredential.key(psk: "9gZkq1mC3t0n8yVv2bXo/A==")
        #expect(
            String(decoding: psk.encodedJSON(), as: UTF8.self)
                == #"{"encryptionType":2,"psk":"9gZkq1mC3t0n8yVv2bXo/A=="}"#)
    }

    @Test("JSON writer escapes quotes, backslashes and control characters")
    func escaping() throws {
        let reply = RegistrationReply.failure(code: "X", message: "a\"b\\c\u{1}d\te", requestId: "r")
        let bytes = reply.encodedJSON()
        #expect(
            String(decoding: bytes, as: UTF8.self)
                == #"{"Response":{"Error":{"Code":"X","Message":"a\"b\\c\u0001d\te"},"RequestId":"r"}}"#)
        #expect(try RegistrationReply(decoding: bytes) == reply)
    }

    @Test("zero padding: nothing added when aligned, zeros otherwise, never PKCS#7")
    func zeroPadding() throws {
        let secret = "0123456789abcdefXYZ"
        for length in [0, 1, 15, 16, 17, 31, 32, 33] {
            let plaintext = [UInt8](repeating: 0x41, count: length)
            let encrypted = try PayloadCipher.encrypt(plaintext, productSecret: secret)
            let ciphertext = try #require(Data(base64Encoded: encrypted.payload))
            #expect(ciphertext.count == (length + 15) / 16 * 16)
            #expect(encrypted.length == length)
            #expect(
                try PayloadCipher.decrypt(payload: encrypted.payload, length: length, productSecret: secret)
                    == plaintext)
        }
    }

    @Test("only the first 16 bytes of the product secret key the cipher")
    func keyIsFirst16Bytes() throws {
        let a = try PayloadCipher.encrypt(Array("hello".utf8), productSecret: "0123456789abcdefAAAA")
        let b = try PayloadCipher.encrypt(Array("hello".utf8), productSecret: "0123456789abcdefBBBBBBBB")
        #expect(a == b)
    }

    @Test("bad payloads give clear errors")
    func badPayloads() {
        let secret = "0123456789abcdef"
        #expect(throws: PayloadError.notBase64) {
            try PayloadCipher.decrypt(payload: "not base64!!", length: nil, productSecret: secret)
        }
        #expect(throws: PayloadError.notBlockAligned) {
            try PayloadCipher.decrypt(
                payload: Data([1, 2, 3]).base64EncodedString(), length: nil, productSecret: secret)
        }
        #expect(throws: PayloadError.productSecretTooShort) {
            try PayloadCipher.decrypt(payload: "", length: nil, productSecret: "short")
        }
        #expect(throws: PayloadError.invalidLength) {
            try PayloadCipher.decrypt(payload: Data(count: 16).base64EncodedString(), length: 17, productSecret: secret)
        }
        #expect(throws: PayloadError.invalidLength) {
            try PayloadCipher.decrypt(payload: Data(count: 16).base64EncodedString(), length: -1, productSecret: secret)
        }
    }

    @Test(
        "host header loses its port, keeps IPv6 brackets",
        arguments: [
            ("iot.example.com:8443", "iot.example.com"),
            ("iot.example.com", "iot.example.com"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("[::1]:8080", "[::1]"),
            ("[::1]", "[::1]"),
        ])
    func hostWithoutPort(header: String, host: String) {
        #expect(CanonicalHost.fromHostHeader(header) == host)
    }

    @Test("algorithm header is case-insensitive")
    func algorithmCase() {
        #expect(SignatureAlgorithm(headerValue: "HMACSHA256") == .hmacSHA256)
        #expect(SignatureAlgorithm(headerValue: "HmacSha1") == .hmacSHA1)
        #expect(SignatureAlgorithm(headerValue: "hmacsha512") == nil)
    }

    @Test("the body hash covers the raw bytes: white space and key order change it")
    func rawBodyBytes() {
        let a = SignedRequest(
            canonicalHost: "h", algorithm: .hmacSHA256, timestamp: "1", nonce: "2",
            body: Array(#"{"ProductId":"P","DeviceName":"d"}"#.utf8))
        var b = a
        b.body = Array(#"{"DeviceName":"d","ProductId":"P"}"#.utf8)
        var c = a
        c.body = Array(#"{"ProductId": "P", "DeviceName": "d"}"#.utf8)
        let signature = a.signature(productSecret: "0123456789abcdef")
        #expect(!b.verify(signature: signature, productSecret: "0123456789abcdef"))
        #expect(!c.verify(signature: signature, productSecret: "0123456789abcdef"))
    }

    @Test(
        "device names",
        arguments: [
            ("xyz", true), ("dev_a.b:c@d-1", true), ("860000000000001", true), ("AA:BB:CC:DD:EE:FF", true),
            (String(repeating: "a", count: 48), true), (String(repeating: "a", count: 49), false),
            ("", false), ("a b", false), ("a/b", false), ("é", false), ("a\u{0}", false), ("a+b", false),
        ])
    func deviceNames(name: String, valid: Bool) {
        #expect(DeviceNameRules.isValid(name) == valid)
    }

    @Test("product secrets are at least 16 characters")
    func productSecrets() {
        #expect(!ProductSecretRules.isValid("0123456789abcde"))
        #expect(ProductSecretRules.isValid("0123456789abcdef"))
    }

    @Test("request bodies in any key order and spacing")
    func requestBodies() throws {
        let body = try RegistrationRequestBody(decoding: Array(#"{ "DeviceName" : "d1", "ProductId":"P1" }"#.utf8))
        #expect(body == RegistrationRequestBody(productId: "P1", deviceName: "d1"))
        #expect(String(decoding: body.encodedJSON(), as: UTF8.self) == #"{"ProductId":"P1","DeviceName":"d1"}"#)
        #expect(throws: ProtocolDecodingError.self) {
            try RegistrationRequestBody(decoding: Array(#"{"ProductId":1,"DeviceName":"d"}"#.utf8))
        }
        let legacy = try LegacyRegistrationRequestBody(
            decoding: Array(
                #"{"deviceName":"xyz","nonce":"5456","productId":"ASJ1234GX","timestamp":1551234565,"signature":"s"}"#
                    .utf8))
        #expect(legacy.signed.nonce == 5456)
        for bad in [
            #"{"deviceName":"x","nonce":-1,"productId":"P","timestamp":1,"signature":"s"}"#,
            #"{"deviceName":"x","nonce":1.5,"productId":"P","timestamp":1,"signature":"s"}"#,
            #"{"deviceName":"x","nonce":true,"productId":"P","timestamp":1,"signature":"s"}"#,
            #"{"deviceName":"x","nonce":"1a","productId":"P","timestamp":1,"signature":"s"}"#,
        ] {
            #expect(throws: ProtocolDecodingError.self) {
                try LegacyRegistrationRequestBody(decoding: Array(bad.utf8))
            }
        }
    }

    @Test("envelopes round-trip")
    func envelopes() throws {
        let payload = EncryptedPayload(length: 53, payload: "ab/c+==")
        let replies: [RegistrationReply] = [
            .success(payload, requestId: "r1"),
            .success(payload, requestId: "r3", state: RegistrationReply.stateExisting),
            .failure(code: "AuthFailure.SignatureFailure", message: "Check signature failed", requestId: "r2"),
        ]
        for reply in replies {
            #expect(try RegistrationReply(decoding: reply.encodedJSON()) == reply)
        }
        #expect(
            String(decoding: replies[0].encodedJSON(), as: UTF8.self)
                == #"{"Response":{"Len":53,"Payload":"ab/c+==","RequestId":"r1"}}"#)
        // IoT Hub's State sits beside Len and Payload.
        #expect(
            String(decoding: replies[1].encodedJSON(), as: UTF8.self)
                == #"{"Response":{"Len":53,"Payload":"ab/c+==","State":1,"RequestId":"r3"}}"#)
        let legacy: [LegacyRegistrationReply] = [
            .success(payload, requestId: "r1"),
            .failure(code: 1010, message: "Check signature failed", requestId: "r2"),
        ]
        for reply in legacy {
            #expect(try LegacyRegistrationReply(decoding: reply.encodedJSON()) == reply)
        }
        #expect(
            String(decoding: legacy[0].encodedJSON(), as: UTF8.self)
                == #"{"code":0,"message":"success","len":53,"payload":"ab/c+==","requestId":"r1"}"#)
        #expect(
            String(decoding: legacy[1].encodedJSON(), as: UTF8.self)
                == #"{"code":1010,"message":"Check signature failed","requestId":"r2"}"#)
    }

    @Test("error codes are unique in both numbering schemes")
    func errorCodesUnique() {
        let all = RegistrationErrorCode.all
        #expect(Set(all.map(\.code)).count == all.count)
        #expect(Set(all.map(\.legacyCode)).count == all.count)
        #expect(RegistrationErrorCode.signatureFailure.legacyCode == 1010)
    }

    @Test("decimal header fields are strict")
    func decimals() {
        #expect(DecimalField.parse("0") == 0)
        #expect(DecimalField.parse("2147483647") == 2_147_483_647)
        #expect(DecimalField.parse("") == nil)
        #expect(DecimalField.parse("-1") == nil)
        #expect(DecimalField.parse("+1") == nil)
        #expect(DecimalField.parse(" 1") == nil)
        #expect(DecimalField.parse("9999999999999999999999") == nil)
    }
}
