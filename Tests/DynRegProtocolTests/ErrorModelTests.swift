import DynRegProtocol
import Foundation
import Testing

/// The public errors are structs compared by their code, and say nothing secret.
@Suite("Protocol error model")
struct ErrorModelTests {
    static let secret = "SECRET-0123456789abcdef"

    func payloadError(_ payload: String, length: Int?, secret: String = secret) -> PayloadError? {
        do {
            _ = try PayloadCipher.decrypt(payload: payload, length: length, productSecret: secret)
            return nil
        } catch {
            return error
        }
    }

    @Test("payload errors compare by code, switch over their static members, and quote neither secret nor payload")
    func payloadErrors() throws {
        let ciphertext = try PayloadCipher.encrypt(Array("{}".utf8), productSecret: Self.secret).payload
        let cases: [(PayloadError?, PayloadError)] = [
            (payloadError("%%not-base64%%", length: nil), .notBase64),
            (payloadError(Data([1, 2, 3]).base64EncodedString(), length: nil), .notBlockAligned),
            (payloadError(ciphertext, length: 99), .invalidLength),
            (payloadError(ciphertext, length: nil, secret: "short"), .productSecretTooShort),
        ]
        for (error, expected) in cases {
            let error = try #require(error)
            #expect(error == expected)
            #expect(error.hashValue == expected.hashValue)
            for other in cases.map(\.1) where other != expected { #expect(error != other) }
            for text in [error.description, String(reflecting: error), "\(error)"] {
                #expect(!text.contains(Self.secret) && !text.contains(ciphertext) && !text.contains("%%"))
            }
            let malformed: Bool
            switch error {
            case .notBase64, .notBlockAligned, .invalidLength: malformed = true
            default: malformed = false
            }
            #expect(malformed == (expected != .productSecretTooShort))
        }
    }

    @Test("an MQTT credential error is a struct that does not quote the psk")
    func mqttError() {
        let psk = "not*base64*psk"
        #expect(throws: MQTTCredentialError.pskNotBase64) {
            try MQTTCredentials.derive(productId: "P", deviceName: "d", psk: psk, expiry: 1)
        }
        #expect(!MQTTCredentialError.pskNotBase64.description.contains(psk))
    }

    @Test(
        "retryable codes: the documented ones, and unknown details of a retryable family",
        arguments: [
            ("InternalError", true), ("RequestLimitExceeded", true), ("InternalError.DbError", true),
            ("RequestLimitExceeded.Device.Burst", true), ("InternalErrorX", false), ("InvalidParameter.Other", false),
            ("AuthFailure.SignatureFailure", false), ("AuthFailure.SignatureExpire", false),
            ("AuthFailure.Unknown", false), ("FailedOperation.DeviceAlreadyActivated", false), ("", false),
            (".InternalError", false), ("1000", false),
        ])
    func retryable(code: String, retryable: Bool) {
        #expect(RegistrationErrorCode.isRetryable(code: code) == retryable)
    }

    @Test("every documented code answers with its own isRetryable")
    func documentedRetryable() {
        for code in RegistrationErrorCode.all {
            #expect(RegistrationErrorCode.isRetryable(code: code.code) == code.isRetryable, "\(code)")
        }
        #expect(RegistrationErrorCode.all.filter(\.isRetryable) == [.requestLimitExceeded, .internalError])
    }
}
