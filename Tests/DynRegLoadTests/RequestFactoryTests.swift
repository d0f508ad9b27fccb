import DynRegLoad
import DynRegProtocol
import Foundation
import NIOCore
import Testing

/// A request as `RequestFactory.write` put it on the wire.
private struct WrittenRequest {
    var requestLine: String
    var headers: [(String, String)]
    var body: [UInt8]

    init(_ buffer: ByteBuffer) throws {
        let bytes = Array(buffer.readableBytesView)
        let text = String(decoding: bytes, as: UTF8.self)
        let parts = text.components(separatedBy: "\r\n\r\n")
        try #require(parts.count == 2)
        var lines = parts[0].components(separatedBy: "\r\n")
        requestLine = lines.removeFirst()
        headers = try lines.map { line in
            let colon = try #require(line.firstIndex(of: ":"))
            return (String(line[..<colon]), String(line[line.index(colon, offsetBy: 2)...]))
        }
        body = Array(parts[1].utf8)
    }

    func header(_ name: String) -> String? { headers.first { $0.0.lowercased() == name.lowercased() }?.1 }
}

@Suite("Request factory")
struct RequestFactoryTests {
    private static let secret = "kQ3n8ZpX2vLw7RtY5mB1cD4f"
    private let target = LoadTarget(url: "http://localhost:8080/base/")!

    private func written(_ mode: LoadMode, index: Int = 7, csrs: [String] = []) throws -> WrittenRequest {
        var factory = RequestFactory(
            mode: mode, target: target, productId: "ASJ1234GX", productSecret: Self.secret, devicePrefix: "bx",
            csrs: csrs)
        var buffer = ByteBufferAllocator().buffer(capacity: 512)
        factory.write(index: index, timestamp: 1_551_234_565, into: &buffer)
        return try WrittenRequest(buffer)
    }

    @Test("a current request verifies with DynRegProtocol's signer", arguments: SignatureAlgorithm.allCases)
    func current(algorithm: SignatureAlgorithm) throws {
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"
        for (index, csrs) in [(7, []), (0, [csr])] as [(Int, [String])] {
            let request = try written(.current(algorithm), index: index, csrs: csrs)
            #expect(request.requestLine == "POST /base/device/register HTTP/1.1")
            #expect(
                request.headers.map(\.0) == [
                    "Host", "Connection", "Content-Type", "X-TC-Algorithm", "X-TC-Timestamp", "X-TC-Nonce",
                    "X-TC-Signature",
                    "Content-Length",
                ])
            #expect(request.header("Host") == "localhost:8080")
            #expect(request.header("Content-Length") == String(request.body.count))
            #expect(request.header(DeviceRequestHeader.algorithm) == algorithm.name)
            let body = try RegistrationRequestBody(decoding: request.body)
            #expect(
                body
                    == RegistrationRequestBody(
                        productId: "ASJ1234GX", deviceName: "bx-\(index)", csr: csrs.isEmpty ? nil : csr))
            let nonce = try #require(request.header(DeviceRequestHeader.nonce))
            #expect((0...Int64(Int32.max)).contains(try #require(DecimalField.parse(nonce))))
            let signed = SignedRequest(
                canonicalHost: "localhost", algorithm: algorithm, timestamp: "1551234565", nonce: nonce,
                body: request.body)
            let signature = try #require(request.header(DeviceRequestHeader.signature))
            #expect(signed.verify(signature: signature, productSecret: Self.secret))
        }
    }

    @Test("a legacy request carries a body the server verifies")
    func legacy() throws {
        let request = try written(.legacy)
        #expect(request.requestLine == "POST /base/register/dev HTTP/1.1")
        #expect(request.header("Content-Type") == DeviceRequestHeader.legacyContentType)
        let body = try LegacyRegistrationRequestBody(decoding: request.body)
        #expect(body.signed.deviceName == "bx-7")
        #expect(body.signed.timestamp == 1_551_234_565)
        #expect(body.signed.verify(signature: body.signature, productSecret: Self.secret))
    }

    @Test("health is a bare GET")
    func health() throws {
        var factory = RequestFactory(
            mode: .health, target: target, productId: "", productSecret: "", devicePrefix: "bx")
        var buffer = ByteBufferAllocator().buffer(capacity: 64)
        factory.write(index: 0, timestamp: 0, into: &buffer)
        #expect(
            String(buffer: buffer)
                == "GET /base/health HTTP/1.1\r\nHost: localhost:8080\r\nConnection: keep-alive\r\n\r\n")
    }

    @Test(
        "targets: the host signed without its port, a known endpoint path dropped",
        arguments: [
            // host, port, Host header, canonical host, path prefix
            ("http://127.0.0.1:8080", ["127.0.0.1", "8080", "127.0.0.1:8080", "127.0.0.1", ""]),
            ("http://example.com/device/register", ["example.com", "80", "example.com", "example.com", ""]),
            ("http://[::1]:9/gw/health", ["::1", "9", "[::1]:9", "[::1]", "/gw"]),
            ("http://h/gw/register/dev/", ["h", "80", "h", "h", "/gw"]),
        ])
    func targets(url: String, expected: [String]) throws {
        let target = try #require(LoadTarget(url: url))
        #expect(
            [target.host, String(target.port), target.hostHeader, target.canonicalHost, target.pathPrefix] == expected)
    }

    @Test("no TLS, no host: not a target", arguments: ["https://example.com", "http://", "example.com:80", ""])
    func notTargets(url: String) {
        #expect(LoadTarget(url: url) == nil)
    }
}
