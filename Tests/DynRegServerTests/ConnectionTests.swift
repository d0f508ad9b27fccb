import DynRegProtocol
import DynRegTestSupport
import Foundation
import Testing

/// What embedded SDKs see on the socket: the exact request bytes they send, and the answer's bytes.
@Suite("Device connections and answer budgets")
struct ConnectionTests {
    /// One HTTP/1.1 answer as bytes: the header block (with its blank line) and the body.
    struct RawAnswer {
        var head: [UInt8]
        var body: [UInt8]
        var headText: String { String(decoding: head, as: UTF8.self) }
        var headerLines: [Substring] { headText.split(separator: "\r\n").dropFirst().map { $0 } }

        init(_ bytes: [UInt8]) throws {
            let separator = Array("\r\n\r\n".utf8)
            guard
                let end = (0...(bytes.count - separator.count)).first(where: { Array(bytes[$0..<$0 + 4]) == separator })
            else { throw TestFailure("no header block in \(String(decoding: bytes, as: UTF8.self))") }
            head = Array(bytes[..<(end + 4)])
            body = Array(bytes[(end + 4)...])
        }
    }

    /// The embedded C SDK's legacy request: its headers, its content type, no `Connection`, nothing after the body.
    static func cSDKRequest(port: Int, body: [UInt8]) -> [UInt8] {
        Array(
            """
            POST /register/dev HTTP/1.1\r
            Host: 127.0.0.1:\(port)\r
            Accept: text/xml,application/json;*/*\r
            Content-Type: application/x-www-form-urlencoded\r
            Content-Length: \(body.count)\r
            \r

            """.utf8) + body
    }

    static func currentRequest(
        port: Int, productId: String, secret: String, device: String, keepAlive: Bool
    )
        -> [UInt8]
    {
        let signed = SignedRequest(
            registering: RegistrationRequestBody(productId: productId, deviceName: device),
            canonicalHost: "127.0.0.1", algorithm: .hmacSHA256, timestamp: Int64(Date().timeIntervalSince1970),
            nonce: Int64.random(in: 1...Int64(Int32.max)))
        var head = "POST /device/register HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\n"
        if keepAlive { head += "Connection: keep-alive\r\n" }
        for (name, value) in signed.headers(productSecret: secret) { head += "\(name): \(value)\r\n" }
        head += "Content-Length: \(signed.body.count)\r\n\r\n"
        return Array(head.utf8) + signed.body
    }

    @Test("a C SDK's legacy request is answered and the connection closed: the SDK reads its psk at once")
    func cSDKLegacyRequestSeesTheEndOfTheAnswer() async throws {
        try await TestServer.withKeyProduct { server, product in
            let signed = LegacySignedRequest(
                productId: product.id, deviceName: "esp32-c3", timestamp: Int64(Date().timeIntervalSince1970),
                nonce: 4242)
            let request = Self.cSDKRequest(port: server.port, body: signed.body(productSecret: product.secret))
            // The SDK reads until the server closes (or its 2,000 ms pass). The bound here is generous, for a loaded
            // machine: what matters is that the server closes, which without `Connection: close` it does not do.
            let exchange = try await RawConnection.exchange(port: server.port, request, timeout: .seconds(10))
            #expect(exchange.closedByServer, "\(exchange.text)")
            let answer = try RawAnswer(exchange.bytes)
            #expect(answer.headerLines.contains("Connection: close"))
            let reply = try LegacyRegistrationReply(decoding: answer.body)
            guard case .success = reply else {
                Issue.record("\(exchange.text)")
                return
            }
        }
    }

    @Test("the current endpoint closes too, unless the request asks for keep-alive")
    func keepAliveOnlyWhenAsked() async throws {
        try await TestServer.withKeyProduct { server, product in
            let closing = try await RawConnection.exchange(
                port: server.port,
                Self.currentRequest(
                    port: server.port, productId: product.id, secret: product.secret, device: "a", keepAlive: false),
                timeout: .seconds(10))
            #expect(closing.closedByServer)
            // Two requests back to back on a kept-alive connection: both answered, and the connection stays.
            let twice =
                Self.currentRequest(
                    port: server.port, productId: product.id, secret: product.secret, device: "b", keepAlive: true)
                + Self.currentRequest(
                    port: server.port, productId: product.id, secret: product.secret, device: "c", keepAlive: true)
            let kept = try await RawConnection.exchange(port: server.port, twice, timeout: .milliseconds(1500))
            #expect(!kept.closedByServer)
            #expect(kept.text.components(separatedBy: "HTTP/1.1 200 OK\r\n").count == 3, "\(kept.text)")
            #expect(!kept.text.contains("Connection: close"))
        }
    }

    @Test("psk answers on both endpoints fit the C SDK's 256-byte buffers; Content-Length, never chunked")
    func pskAnswerBudgets() async throws {
        try await TestServer.withKeyProduct { server, product in
            // The longest device name an SDK sends (48), so the budget holds for every name.
            let name = String(repeating: "n", count: 48)
            let legacy = LegacySignedRequest(
                productId: product.id, deviceName: name, timestamp: Int64(Date().timeIntervalSince1970), nonce: 1)
            let requests = [
                Self.cSDKRequest(port: server.port, body: legacy.body(productSecret: product.secret)),
                Self.currentRequest(
                    port: server.port, productId: product.id, secret: product.secret, device: name,
                    keepAlive: false),
            ]
            for request in requests {
                let answer = try RawAnswer(try await RawConnection.exchange(port: server.port, request).bytes)
                #expect(answer.body.count <= 255, "\(answer.body.count) bytes: \(answer.headText)")
                #expect(answer.head.count <= 255, "\(answer.head.count) bytes: \(answer.headText)")
                Self.expectPlainLength(answer)
            }
        }
    }

    @Test(
        "certificate answers fit the C SDK's 5 KiB buffer, with a P-256 or an RSA-2048 CA",
        arguments: ["p256", "rsa2048"])
    func certificateAnswerBudgets(caKeyType: String) async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct(#""caKeyType":"\#(caKeyType)""#)
            let request = Self.currentRequest(
                port: server.port, productId: product.id, secret: product.secret,
                device: String(repeating: "c", count: 48), keepAlive: false)
            let answer = try RawAnswer(try await RawConnection.exchange(port: server.port, request).bytes)
            guard case .success = try RegistrationReply(decoding: answer.body) else {
                Issue.record("\(String(decoding: answer.body, as: UTF8.self))")
                return
            }
            #expect(answer.body.count <= 5120, "\(answer.body.count) bytes")
            Self.expectPlainLength(answer)
        }
    }

    @Test("generated product ids and secrets are within what the C SDK keeps (10 and 32 characters)")
    func generatedIdentifiersFitTheCSDK() async throws {
        try await TestServer.with { server in
            for _ in 0..<5 {
                let product = try await server.createProduct()
                #expect(product.id.utf8.count == 10)
                #expect((16...32).contains(product.secret.utf8.count))
            }
        }
    }

    /// `Content-Length` with that spelling, equal to the body, and no `Transfer-Encoding`.
    static func expectPlainLength(_ answer: RawAnswer, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(
            answer.headerLines.contains("Content-Length: \(answer.body.count)"), "\(answer.headText)",
            sourceLocation: sourceLocation)
        #expect(
            !answer.headText.lowercased().contains("transfer-encoding"), "\(answer.headText)",
            sourceLocation: sourceLocation)
    }
}
