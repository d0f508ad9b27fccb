import Foundation

/// The JSON body of `POST /device/register`.
public struct RegistrationRequestBody: Sendable, Hashable {
    public var productId: String
    public var deviceName: String
    /// Optional PEM PKCS#10 request (a dynreg extension): the device keeps its private key.
    public var csr: String?
    /// IoT Hub's `EncryptionType`: 1 with ``clientCert`` registers a certificate the device already holds.
    public var encryptionType: Int?
    /// IoT Hub's `ClientCert` (the C SDK writes `clientCert`): the device's own certificate, in PEM.
    public var clientCert: String?

    public init(
        productId: String, deviceName: String, csr: String? = nil, encryptionType: Int? = nil,
        clientCert: String? = nil
    ) {
        self.productId = productId
        self.deviceName = deviceName
        self.csr = csr
        self.encryptionType = encryptionType
        self.clientCert = clientCert
    }

    /// `{"ProductId":…,"DeviceName":…}` as the official SDKs send it.
    public func encodedJSON() -> [UInt8] {
        var writer = JSONWriter(capacity: 96)
        writer.beginObject()
        writer.field("ProductId", productId)
        writer.field("DeviceName", deviceName)
        if let csr { writer.field("Csr", csr) }
        if let encryptionType { writer.field("EncryptionType", encryptionType) }
        if let clientCert { writer.field("ClientCert", clientCert) }
        writer.endObject()
        return writer.bytes
    }

    /// Parses a body in any key order and white space. A newline written raw inside a string (PEM pasted as is)
    /// is read as the `\n` it stands for.
    public init(decoding body: [UInt8]) throws(ProtocolDecodingError) {
        struct Wire: Decodable {
            var ProductId: String
            var DeviceName: String
            var Csr: String?
            var EncryptionType: Int?
            var encryptionType: Int?
            var ClientCert: String?
            var clientCert: String?
        }
        let what = "a JSON object with string ProductId and DeviceName"
        let wire = try decodeJSON(Wire.self, JSONText.escapingRawNewlines(body), what: what)
        self.init(
            productId: wire.ProductId, deviceName: wire.DeviceName, csr: wire.Csr,
            encryptionType: wire.EncryptionType ?? wire.encryptionType, clientCert: wire.ClientCert ?? wire.clientCert)
    }
}

enum JSONText {
    /// `body` with each CR and LF inside a string literal written as its escape; everything else as it was.
    /// The signature is over the raw bytes: this copy is only for reading.
    static func escapingRawNewlines(_ body: [UInt8]) -> [UInt8] {
        guard body.contains(where: { $0 == 0x0A || $0 == 0x0D }) else { return body }
        var out: [UInt8] = []
        out.reserveCapacity(body.count + 64)
        var inString = false
        var escaped = false
        for byte in body {
            if inString {
                if escaped {
                    escaped = false
                } else if byte == UInt8(ascii: "\\") {
                    escaped = true
                } else if byte == UInt8(ascii: "\"") {
                    inString = false
                } else if byte == 0x0A {
                    out += [UInt8(ascii: "\\"), UInt8(ascii: "n")]
                    continue
                } else if byte == 0x0D {
                    out += [UInt8(ascii: "\\"), UInt8(ascii: "r")]
                    continue
                }
            } else if byte == UInt8(ascii: "\"") {
                inString = true
            }
            out.append(byte)
        }
        return out
    }
}

/// The JSON body of the legacy `POST /register/dev`.
public struct LegacyRegistrationRequestBody: Sendable, Hashable {
    public var signed: LegacySignedRequest
    public var signature: String

    public init(signed: LegacySignedRequest, signature: String) {
        self.signed = signed
        self.signature = signature
    }

    public func encodedJSON() -> [UInt8] {
        var writer = JSONWriter(capacity: 160)
        writer.beginObject()
        writer.field("deviceName", signed.deviceName)
        writer.field("nonce", signed.nonce)
        writer.field("productId", signed.productId)
        writer.field("timestamp", signed.timestamp)
        writer.field("signature", signature)
        writer.endObject()
        return writer.bytes
    }

    /// Parses the body; `nonce` and `timestamp` may be JSON numbers or decimal strings.
    public init(decoding body: [UInt8]) throws(ProtocolDecodingError) {
        struct Wire: Decodable {
            var productId: String
            var deviceName: String
            var signature: String
            var nonce: FlexibleDecimal
            var timestamp: FlexibleDecimal
        }
        let wire = try decodeJSON(
            Wire.self, body,
            what: "a JSON object with productId, deviceName, signature and non-negative integer nonce and timestamp")
        self.init(
            signed: LegacySignedRequest(
                productId: wire.productId, deviceName: wire.deviceName,
                timestamp: wire.timestamp.value, nonce: wire.nonce.value),
            signature: wire.signature
        )
    }
}

private let sharedDecoder = JSONDecoder()

/// Every decoder of the protocol's JSON: one error that says what was expected, never the decoder's own.
func decodeJSON<T: Decodable>(
    _ type: T.Type, _ body: some Collection<UInt8>, what: String
)
    throws(ProtocolDecodingError) -> T
{
    do {
        return try sharedDecoder.decode(T.self, from: Data(body))
    } catch {
        throw ProtocolDecodingError("expected \(what)")
    }
}

/// A non-negative integer sent as a JSON number or a decimal string.
private struct FlexibleDecimal: Decodable {
    var value: Int64

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if let number = try? container.decode(Int64.self), number >= 0 {
            value = number
        } else if let text = try? container.decode(String.self), let number = DecimalField.parse(text) {
            value = number
        } else {
            throw DecodingError.dataCorruptedError(in: container, debugDescription: "not a non-negative integer")
        }
    }
}

/// Strict parsing of the decimal header fields (`X-TC-Timestamp`, `X-TC-Nonce`).
public enum DecimalField {
    /// 1–18 ASCII digits, nothing else: every such value fits in an `Int64`, so parsing cannot overflow.
    public static func parse(_ text: some StringProtocol) -> Int64? {
        let utf8 = text.utf8
        guard !utf8.isEmpty, utf8.count <= 18 else { return nil }
        var value: Int64 = 0
        for byte in utf8 {
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
            value = value * 10 + Int64(byte - UInt8(ascii: "0"))
        }
        return value
    }
}

/// The answer of `POST /device/register`, as both sides see it.
public enum RegistrationReply: Sendable, Hashable {
    /// `state` is IoT Hub's `State`: 0 when the platform created the device for this registration, 1 when the
    /// device already existed; `nil` when the server did not send it.
    case success(EncryptedPayload, requestId: String, state: Int? = nil)
    case failure(code: String, message: String, requestId: String)

    /// `State` for a device this registration created.
    public static let stateCreated = 0
    /// `State` for a device that existed before this registration.
    public static let stateExisting = 1

    /// `{"Response":{"Len":…,"Payload":…,"State":…,"RequestId":…}}` or
    /// `{"Response":{"Error":{"Code":…,"Message":…},"RequestId":…}}`.
    public func encodedJSON() -> [UInt8] {
        var writer = JSONWriter(capacity: 192)
        writer.beginObject()
        writer.key("Response")
        writer.beginObject()
        switch self {
        case .success(let payload, let requestId, let state):
            writer.field("Len", payload.length)
            writer.field("Payload", payload.payload)
            if let state { writer.field("State", state) }
            writer.field("RequestId", requestId)
        case .failure(let code, let message, let requestId):
            writer.key("Error")
            writer.beginObject()
            writer.field("Code", code)
            writer.field("Message", message)
            writer.endObject()
            writer.field("RequestId", requestId)
        }
        writer.endObject()
        writer.endObject()
        return writer.bytes
    }

    public init(decoding body: [UInt8]) throws(ProtocolDecodingError) {
        struct Wire: Decodable {
            struct Failure: Decodable {
                var Code: String
                var Message: String?
            }
            struct Response: Decodable {
                var Error: Failure?
                var Len: Int?
                var Payload: String?
                var State: Int?
                var RequestId: String?
            }
            var Response: Response
        }
        let response = try decodeJSON(Wire.self, body, what: "a JSON object with a Response").Response
        let requestId = response.RequestId ?? ""
        if let error = response.Error {
            self = .failure(code: error.Code, message: error.Message ?? "", requestId: requestId)
        } else if let length = response.Len, let payload = response.Payload {
            self = .success(
                EncryptedPayload(length: length, payload: payload), requestId: requestId, state: response.State)
        } else {
            throw ProtocolDecodingError("the answer has neither Error nor Len and Payload")
        }
    }
}

/// The answer of the legacy `POST /register/dev`.
public enum LegacyRegistrationReply: Sendable, Hashable {
    case success(EncryptedPayload, requestId: String)
    case failure(code: Int, message: String, requestId: String)

    public func encodedJSON() -> [UInt8] {
        var writer = JSONWriter(capacity: 192)
        writer.beginObject()
        switch self {
        case .success(let payload, let requestId):
            writer.field("code", 0)
            writer.field("message", "success")
            writer.field("len", payload.length)
            writer.field("payload", payload.payload)
            writer.field("requestId", requestId)
        case .failure(let code, let message, let requestId):
            writer.field("code", code)
            writer.field("message", message)
            writer.field("requestId", requestId)
        }
        writer.endObject()
        return writer.bytes
    }

    public init(decoding body: [UInt8]) throws(ProtocolDecodingError) {
        struct Wire: Decodable {
            var code: Int
            var message: String?
            var len: Int?
            var payload: String?
            var requestId: String?
        }
        let wire = try decodeJSON(Wire.self, body, what: "a JSON object with a numeric code")
        if wire.code != 0 {
            self = .failure(code: wire.code, message: wire.message ?? "", requestId: wire.requestId ?? "")
        } else if let length = wire.len, let payload = wire.payload {
            self = .success(EncryptedPayload(length: length, payload: payload), requestId: wire.requestId ?? "")
        } else {
            throw ProtocolDecodingError("the answer has code 0 but no len and payload")
        }
    }
}
