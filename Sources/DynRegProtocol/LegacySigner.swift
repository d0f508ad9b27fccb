import Crypto
import Foundation

/// The signed fields of a legacy `POST /register/dev` request (PROTOCOL.md §2).
public struct LegacySignedRequest: Sendable, Hashable {
    public var productId: String
    public var deviceName: String
    public var timestamp: Int64
    public var nonce: Int64

    public init(productId: String, deviceName: String, timestamp: Int64, nonce: Int64) {
        self.productId = productId
        self.deviceName = deviceName
        self.timestamp = timestamp
        self.nonce = nonce
    }

    public var stringToSign: String {
        "deviceName=\(deviceName)&nonce=\(nonce)&productId=\(productId)&timestamp=\(timestamp)"
    }

    private func hexMAC(productSecret: String) -> [UInt8] {
        let mac = SignatureAlgorithm.hmacSHA1.mac(key: Array(productSecret.utf8), message: Array(stringToSign.utf8))
        return Hex.lowercaseBytes(mac)
    }

    /// `Base64(lowercase hex(HMAC-SHA1))`: the Base64 covers the 40 hex characters, not the raw digest.
    public func signature(productSecret: String) -> String {
        Data(hexMAC(productSecret: productSecret)).base64EncodedString()
    }

    /// The JSON body of this request signed with `productSecret`, byte for byte as the C SDK sends it.
    public func body(productSecret: String) -> [UInt8] {
        LegacyRegistrationRequestBody(signed: self, signature: signature(productSecret: productSecret)).encodedJSON()
    }

    /// The headers to send with ``body(productSecret:)``; the signature is in the body.
    public static let headers = [(DeviceRequestHeader.contentType, DeviceRequestHeader.legacyContentType)]

    public func verify(signature: String, productSecret: String) -> Bool {
        guard let presented = Data(base64Encoded: signature) else { return false }
        return constantTimeEquals(hexMAC(productSecret: productSecret), presented)
    }
}
