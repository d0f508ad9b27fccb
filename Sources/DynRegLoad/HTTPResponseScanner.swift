/// A minimal HTTP/1.1 response reader for the generator's connections: status, a `Content-Length` or chunked
/// body, `Connection: close`. It reads a buffer that may hold part of a response, one response or more, and
/// never reads past the first response.
package enum HTTPResponseScanner {
    package enum Scan<Outcome> {
        /// More bytes are needed.
        case incomplete
        /// Not an answer the generator can read; close the connection.
        case invalid(String)
        /// `outcome` as `read` returned it; the first `consumed` bytes make up the response.
        case complete(outcome: Outcome, consumed: Int, close: Bool)
    }

    /// Headers longer than this without their blank line end the connection.
    package static let maximumHeaderSize = 64 * 1024

    /// Scans the response at the start of `bytes`; once it is whole, hands its status and body to `read`.
    package static func scan<Outcome>(
        _ bytes: UnsafeRawBufferPointer, read: (_ status: Int, _ body: UnsafeRawBufferPointer) -> Outcome
    ) -> Scan<Outcome> {
        guard let headerEnd = find(crlfcrlf: bytes) else {
            return bytes.count > maximumHeaderSize ? .invalid("response headers over 64 KiB") : .incomplete
        }
        // "HTTP/1.1 200 OK"
        guard headerEnd >= 12, bytes[0] == UInt8(ascii: "H"), bytes[8] == UInt8(ascii: " "),
            let status = threeDigits(bytes, at: 9)
        else { return .invalid("not an HTTP/1.1 response") }
        var contentLength: Int?
        var chunked = false
        var close = false
        var lineStart = lineEnd(bytes, from: 0) + 2
        while lineStart < headerEnd {
            let end = lineEnd(bytes, from: lineStart)
            if let colon = (lineStart..<end).first(where: { bytes[$0] == UInt8(ascii: ":") }) {
                var valueStart = colon + 1
                while valueStart < end, isSpace(bytes[valueStart]) { valueStart += 1 }
                var valueEnd = end
                while valueEnd > valueStart, isSpace(bytes[valueEnd - 1]) { valueEnd -= 1 }
                let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<valueEnd])
                if nameIs("content-length", bytes, lineStart, colon) {
                    guard !value.isEmpty, value.allSatisfy({ $0 >= 48 && $0 <= 57 }), value.count < 10 else {
                        return .invalid("bad Content-Length")
                    }
                    contentLength = value.reduce(0) { $0 * 10 + Int($1) - 48 }
                } else if nameIs("transfer-encoding", bytes, lineStart, colon) {
                    chunked = lowercased(value).contains("chunked")
                } else if nameIs("connection", bytes, lineStart, colon) {
                    close = lowercased(value).contains("close")
                }
            }
            lineStart = end + 2
        }
        let bodyStart = headerEnd + 4
        if status == 204 || status == 304 {
            let empty = UnsafeRawBufferPointer(rebasing: bytes[bodyStart..<bodyStart])
            return .complete(outcome: read(status, empty), consumed: bodyStart, close: close)
        }
        if chunked {
            return scanChunks(bytes, from: bodyStart, status: status, close: close, read: read)
        }
        guard let length = contentLength else { return .invalid("response without Content-Length") }
        guard bytes.count >= bodyStart + length else { return .incomplete }
        let outcome = read(status, UnsafeRawBufferPointer(rebasing: bytes[bodyStart..<(bodyStart + length)]))
        return .complete(outcome: outcome, consumed: bodyStart + length, close: close)
    }

    private static func scanChunks<Outcome>(
        _ bytes: UnsafeRawBufferPointer, from bodyStart: Int, status: Int, close: Bool,
        read: (Int, UnsafeRawBufferPointer) -> Outcome
    ) -> Scan<Outcome> {
        var body: [UInt8] = []
        var index = bodyStart
        while true {
            let end = lineEnd(bytes, from: index)
            guard end < bytes.count else { return .incomplete }
            // The size, then optional extensions after `;`.
            var size = 0
            var digits = 0
            for position in index..<end {
                guard let digit = hexValue(bytes[position]) else { break }
                // Eight digits are 4 GiB: more is not an answer, and would overflow.
                guard digits < 8 else { return .invalid("bad chunk size") }
                size = size * 16 + digit
                digits += 1
            }
            guard digits > 0 else { return .invalid("bad chunk size") }
            index = end + 2
            if size == 0 {
                // Trailers are not expected: the terminating empty line follows at once.
                guard index + 2 <= bytes.count else { return .incomplete }
                guard bytes[index] == 13, bytes[index + 1] == 10 else { return .invalid("chunk trailers") }
                let outcome = body.withUnsafeBytes { read(status, $0) }
                return .complete(outcome: outcome, consumed: index + 2, close: close)
            }
            guard index + size + 2 <= bytes.count else { return .incomplete }
            guard bytes[index + size] == 13, bytes[index + size + 1] == 10 else {
                return .invalid("a chunk longer than its size")
            }
            body += UnsafeRawBufferPointer(rebasing: bytes[index..<(index + size)])
            index += size + 2
        }
    }

    private static func find(crlfcrlf bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var index = 0
        while index <= bytes.count - 4 {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 {
                return index
            }
            index += 1
        }
        return nil
    }

    /// The index of the `\r` ending the line that starts at `start`, or `bytes.count`.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        var index = start
        while index + 1 < bytes.count, !(bytes[index] == 13 && bytes[index + 1] == 10) { index += 1 }
        return index + 1 < bytes.count ? index : bytes.count
    }

    private static func threeDigits(_ bytes: UnsafeRawBufferPointer, at index: Int) -> Int? {
        var value = 0
        for position in index..<(index + 3) {
            let byte = bytes[position]
            guard byte >= 48, byte <= 57 else { return nil }
            value = value * 10 + Int(byte - 48)
        }
        return value
    }

    private static func isSpace(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }

    private static func nameIs(
        _ name: StaticString, _ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int
    ) -> Bool {
        guard end - start == name.utf8CodeUnitCount else { return false }
        for offset in 0..<(end - start) where bytes[start + offset] | 0x20 != name.utf8Start[offset] {
            return false
        }
        return true
    }

    private static func lowercased(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes, as: UTF8.self).lowercased()
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 48...57: return Int(byte - 48)
        case 97...102: return Int(byte - 87)
        case 65...70: return Int(byte - 55)
        default: return nil
        }
    }
}
