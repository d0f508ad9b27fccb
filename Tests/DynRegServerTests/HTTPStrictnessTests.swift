import DynRegProtocol
import DynRegServer
import DynRegTestSupport
import Foundation
import Testing

/// Requests a strict HTTP server refuses or ends, sent byte for byte.
@Suite("HTTP strictness on the device routes")
struct HTTPStrictnessTests {
    static func exchange(
        _ port: Int, _ text: String, timeout: Duration = .seconds(10)
    ) async throws
        -> RawConnection.Exchange
    {
        try await RawConnection.exchange(port: port, Array(text.utf8), timeout: timeout)
    }

    @Test("two Host headers: InvalidParameter in the envelope, on both endpoints")
    func twoHosts() async throws {
        try await TestServer.withKeyProduct { server, product in
            let body = #"{"ProductId":"\#(product.id)","DeviceName":"d"}"#
            for path in [RegistrationPath.current, RegistrationPath.legacy] {
                let request =
                    "POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.example\r\nContent-Type: application/json\r\n"
                    + "Content-Length: \(body.utf8.count)\r\n\r\n\(body)"
                let answer = try await Self.exchange(server.port, request)
                #expect(answer.text.hasPrefix("HTTP/1.1 200"), "\(answer.text)")
                #expect(answer.text.contains("more than one Host header"), "\(answer.text)")
                #expect(answer.closedByServer)
            }
        }
    }

    @Test("HTTP/1.0 closes after the answer unless it asks for keep-alive")
    func http10() async throws {
        try await TestServer.with { server in
            let closed = try await Self.exchange(server.port, "GET /livez HTTP/1.0\r\n\r\n")
            #expect(closed.text.contains("200 OK"), "\(closed.text)")
            #expect(closed.closedByServer)
            let kept = try await Self.exchange(
                server.port, "GET /livez HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", timeout: .seconds(2))
            #expect(kept.text.contains("200 OK"), "\(kept.text)")
            #expect(!kept.closedByServer)
        }
    }

    @Test("a body over the limit is refused and the connection closed, keep-alive or not: nothing is drained")
    func oversizedBodyCloses() async throws {
        try await TestServer.withKeyProduct { server, _ in
            let request =
                "POST \(RegistrationPath.current) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: keep-alive\r\n"
                + "Content-Length: 1000000\r\n\r\n" + String(repeating: "a", count: 8192)
            let answer = try await Self.exchange(server.port, request)
            #expect(answer.text.contains("larger than 4096 bytes"), "\(answer.text.prefix(300))")
            #expect(answer.closedByServer)
        }
    }

    @Test("HEAD /health answers the status without a body")
    func headHealth() async throws {
        try await TestServer.with { server in
            let answer = try await Self.exchange(
                server.port, "HEAD /health HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
            // 503 too: on a loaded machine the background check of the store may be late.
            #expect(
                answer.text.hasPrefix("HTTP/1.1 200") || answer.text.hasPrefix("HTTP/1.1 503"), "\(answer.text)")
            #expect(!answer.text.contains("status"))
        }
    }
}
