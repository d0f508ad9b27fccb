import DynRegProtocol
package import NIOCore

/// Builds the HTTP/1.1 request for each device index. The headers and body come from DynRegProtocol's
/// ``SignedRequest`` and ``LegacySignedRequest``, as for the SDK, so the load is what devices send.
package struct RequestFactory: Sendable {
    package let mode: LoadMode
    package let path: String
    /// The request line, `Host` and `Connection`.
    private let head: [UInt8]
    private let canonicalHost: String
    private let productId: String
    private let productSecret: String
    private let devicePrefix: String
    /// PEM CSRs by device index, or empty.
    private let csrs: [String]
    /// Broker logins: the token's header, and each device's JSON credentials by index.
    private let authorization: String
    private let authBodies: [[UInt8]]
    private var random = WyRand()

    package init(
        mode: LoadMode, target: LoadTarget, productId: String, productSecret: String, devicePrefix: String,
        csrs: [String] = [], brokerToken: String = "", authBodies: [[UInt8]] = []
    ) {
        authorization = "Bearer " + brokerToken
        self.authBodies = authBodies
        self.mode = mode
        path = target.pathPrefix + mode.endpoint
        // Asked for in so many words: the device endpoints close a connection after answering otherwise.
        head = Array(
            "\(mode.isProbe ? "GET" : "POST") \(path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\nConnection: keep-alive\r\n"
                .utf8)
        canonicalHost = target.canonicalHost
        self.productId = productId
        self.productSecret = productSecret
        self.devicePrefix = devicePrefix
        self.csrs = csrs
    }

    package func deviceName(_ index: Int) -> String { "\(devicePrefix)-\(index)" }

    /// The headers (without `Host` and `Content-Length`) and body for device `index`, signed at `timestamp`.
    package mutating func request(index: Int, timestamp: Int64) -> (headers: [(String, String)], body: [UInt8]) {
        switch mode {
        case .health, .livez:
            return ([], [])
        case .auth:
            return (
                [("Content-Type", "application/json"), ("Authorization", authorization)],
                index < authBodies.count ? authBodies[index] : []
            )
        case .current(let algorithm):
            let signed = SignedRequest(
                registering: RegistrationRequestBody(
                    productId: productId, deviceName: deviceName(index), csr: index < csrs.count ? csrs[index] : nil),
                canonicalHost: canonicalHost, algorithm: algorithm, timestamp: timestamp,
                nonce: Int64(random.nonce()))
            return (signed.headers(productSecret: productSecret), signed.body)
        case .legacy:
            let signed = LegacySignedRequest(
                productId: productId, deviceName: deviceName(index), timestamp: timestamp,
                nonce: Int64(random.nonce()))
            return (LegacySignedRequest.headers, signed.body(productSecret: productSecret))
        }
    }

    /// Writes the whole HTTP/1.1 request for device `index`, to go out in one `write`.
    package mutating func write(index: Int, timestamp: Int64, into buffer: inout ByteBuffer) {
        buffer.writeBytes(head)
        guard !mode.isProbe else {
            buffer.writeStaticString("\r\n")
            return
        }
        let (headers, body) = request(index: index, timestamp: timestamp)
        for (name, value) in headers {
            buffer.writeString(name)
            buffer.writeStaticString(": ")
            buffer.writeString(value)
            buffer.writeStaticString("\r\n")
        }
        buffer.writeStaticString("Content-Length: ")
        buffer.writeString(String(body.count))
        buffer.writeStaticString("\r\n\r\n")
        buffer.writeBytes(body)
    }
}

/// A fast non-cryptographic generator seeded from the system's: nonces only need to differ, and the system
/// generator costs a system call per request.
package struct WyRand: Sendable {
    private var state: UInt64

    package init() { state = UInt64.random(in: .min ... .max) }

    package mutating func next() -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }

    /// 0 … 2^31−1, the range the SDKs send.
    package mutating func nonce() -> UInt32 { UInt32(truncatingIfNeeded: next() >> 33) }
}
