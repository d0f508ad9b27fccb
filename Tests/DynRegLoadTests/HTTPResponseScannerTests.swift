import DynRegLoad
import Testing

/// What the scanner made of a buffer, with the body copied out.
private enum Read: Equatable {
    case incomplete
    case invalid
    case complete(status: Int, body: String, consumed: Int, close: Bool)
}

private func read(_ text: String) -> Read { read(Array(text.utf8)) }

private func read(_ bytes: [UInt8]) -> Read {
    let scan = bytes.withUnsafeBytes { raw in
        HTTPResponseScanner.scan(raw) { status, body in (status, String(decoding: body, as: UTF8.self)) }
    }
    switch scan {
    case .incomplete: return .incomplete
    case .invalid: return .invalid
    case .complete(let outcome, let consumed, let close):
        return .complete(status: outcome.0, body: outcome.1, consumed: consumed, close: close)
    }
}

/// A response and what a whole read of it gives.
struct ResponseCase: Sendable, CustomTestStringConvertible {
    var name: String
    var wire: String
    var status: Int
    var body: String
    var close = false

    var testDescription: String { name }
}

@Suite("HTTP/1.1 response scanner")
struct HTTPResponseScannerTests {
    static let responses: [ResponseCase] = [
        ResponseCase(
            name: "Content-Length", wire: "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nDate: x\r\n\r\n{\"a\":\"b c\"}",
            status: 200, body: #"{"a":"b c"}"#),
        ResponseCase(
            name: "header names in any case, value padded",
            wire: "HTTP/1.1 200 OK\r\ncOnTeNt-LeNgTh:   2 \r\n\r\nok", status: 200, body: "ok"),
        ResponseCase(
            name: "empty body", wire: "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", status: 404, body: ""),
        ResponseCase(
            name: "Connection: close",
            wire: "HTTP/1.1 503 Service Unavailable\r\nConnection: Close\r\nContent-Length: 4\r\n\r\nbusy",
            status: 503, body: "busy", close: true),
        ResponseCase(
            name: "chunked",
            wire: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                + "5\r\nhello\r\nA;ext=1\r\n, world!!!\r\n0\r\n\r\n",
            status: 200, body: "hello, world!!!"),
        ResponseCase(
            name: "chunked with upper-case size and close",
            wire: "HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n1B\r\n"
                + String(repeating: "z", count: 27) + "\r\n0\r\n\r\n",
            status: 200, body: String(repeating: "z", count: 27), close: true),
        ResponseCase(name: "204 has no body", wire: "HTTP/1.1 204 No Content\r\n\r\n", status: 204, body: ""),
        ResponseCase(
            name: "no reason phrase", wire: "HTTP/1.1 200\r\nContent-Length: 1\r\n\r\n1", status: 200, body: "1"),
    ]

    @Test("a whole response", arguments: responses)
    func whole(response: ResponseCase) {
        #expect(
            read(response.wire)
                == .complete(
                    status: response.status, body: response.body, consumed: response.wire.utf8.count,
                    close: response.close))
    }

    @Test("every prefix is incomplete, never invalid or complete", arguments: responses)
    func splitAtEveryByte(response: ResponseCase) {
        let bytes = Array(response.wire.utf8)
        for end in 0..<bytes.count {
            #expect(read(Array(bytes[..<end])) == .incomplete, "first \(end) of \(bytes.count) bytes")
        }
    }

    @Test("a second response in the buffer is left for the next scan", arguments: responses)
    func pipelined(response: ResponseCase) {
        let next = "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nnxt"
        let bytes = Array((response.wire + next).utf8)
        let first = read(bytes)
        #expect(
            first
                == .complete(
                    status: response.status, body: response.body, consumed: response.wire.utf8.count,
                    close: response.close))
        #expect(
            read(Array(bytes[response.wire.utf8.count...]))
                == .complete(status: 200, body: "nxt", consumed: next.utf8.count, close: false))
    }

    @Test(
        "answers the generator cannot read",
        arguments: [
            "HTTP/1.1 200 OK\r\n\r\nno length, no chunks",
            "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2p1 Debian\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 1 2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nabc\r\n0\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-Trailer: 1\r\n\r\n",
        ])
    func invalid(wire: String) {
        #expect(read(wire) == .invalid)
    }

    @Test("headers without an end are cut off at 64 KiB")
    func endlessHeaders() {
        let start = Array("HTTP/1.1 200 OK\r\nX: ".utf8)
        let filler = HTTPResponseScanner.maximumHeaderSize - start.count
        let within = start + Array(repeating: UInt8(ascii: "a"), count: filler)
        #expect(read(within) == .incomplete)
        #expect(read(within + [UInt8(ascii: "a")]) == .invalid)
    }
}
