import DynRegProtocol
import DynRegServer
import DynRegTestSupport
import Foundation
import Synchronization
import Testing

/// What a hostile client can hold: idle and slow connections are closed, and the listener takes only so many.
/// Timeouts are configured short and the bounds waited for are generous: the tests check that the server closes,
/// never how fast.
@Suite("Connection limits and timeouts")
struct ConnectionLimitTests {
    /// Whether the server ends the connection within `wait` after `bytes` were sent (a reset counts as an end).
    static func serverCloses(_ port: Int, _ bytes: String, within wait: Duration) async -> Bool {
        do {
            return try await RawConnection.exchange(port: port, Array(bytes.utf8), timeout: wait).closedByServer
        } catch {
            return true
        }
    }

    static func configure(
        _ change: @escaping @Sendable (inout ConnectionLimits) -> Void
    ) -> (inout ServerConfiguration)
        -> Void
    {
        { change(&$0.connections) }
    }

    @Test("a request whose head, or whose body, never finishes is closed after the request timeout")
    func slowRequests() async throws {
        try await TestServer.with(configure: Self.configure { $0.requestTimeout = .seconds(1) }) { server in
            let port = server.port
            #expect(
                await Self.serverCloses(port, "POST /device/register HTTP/1.1\r\nHost: a\r\n", within: .seconds(10)))
            let partialBody = "POST /device/register HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n{\"Pro"
            #expect(await Self.serverCloses(port, partialBody, within: .seconds(10)))
            // A connection that sends nothing at all.
            #expect(await Self.serverCloses(port, "", within: .seconds(10)))
            // A whole request is answered, and the kept-alive connection then waits for the idle timeout (60 s).
            let whole = try await RawConnection.exchange(
                port: port, Array("GET /livez HTTP/1.1\r\nHost: a\r\n\r\n".utf8), timeout: .seconds(3))
            #expect(whole.text.hasPrefix("HTTP/1.1 200"))
            #expect(!whole.closedByServer, "the request timeout ends with the request")
        }
    }

    /// The guard checks a time limit when it falls due, not on every request; a request begun meanwhile moves it.
    @Test("a second request on a kept-alive connection has a time limit of its own, from its first byte")
    func secondRequestTimeLimit() async throws {
        try await TestServer.with(configure: Self.configure { $0.requestTimeout = .seconds(2) }) { server in
            let first = Array("GET /livez HTTP/1.1\r\nHost: a\r\n\r\n".utf8)
            // The second begins at 1.2 s and ends at 2.4 s: past the first limit's check (2 s), within its own (3.2 s).
            let finished = try await RawConnection.exchange(
                port: server.port, first, timeout: .seconds(5),
                later: [
                    (after: .milliseconds(1_200), bytes: Array("GET /livez HTTP/1.1\r\n".utf8)),
                    (after: .milliseconds(2_400), bytes: Array("Host: a\r\n\r\n".utf8)),
                ])
            #expect(finished.text.components(separatedBy: "HTTP/1.1 200").count - 1 == 2, "\(finished.text)")
            #expect(!finished.closedByServer)
            // Begun at 1.2 s and never finished, it is closed once its own limit has passed.
            let unfinished = try await RawConnection.exchange(
                port: server.port, first, timeout: .seconds(10),
                later: [(after: .milliseconds(1_200), bytes: Array("GET /livez HTTP/1.1\r\n".utf8))])
            #expect(unfinished.text.hasPrefix("HTTP/1.1 200"))
            #expect(unfinished.closedByServer, "the unfinished second request is cut off")
        }
    }

    @Test("a kept-alive connection is closed after the idle timeout")
    func idleKeepAlive() async throws {
        try await TestServer.with(configure: Self.configure { $0.idleTimeout = .seconds(1) }) { server in
            let answer = try await RawConnection.exchange(
                port: server.port, Array("GET /livez HTTP/1.1\r\nHost: a\r\n\r\n".utf8), timeout: .seconds(15))
            #expect(answer.text.hasPrefix("HTTP/1.1 200"), "\(answer.text)")
            #expect(answer.closedByServer)
        }
    }

    @Test("past the connection limit a new connection evicts the one that has waited longest, and is served")
    func maxConnections() async throws {
        try await TestServer.with(
            configure: Self.configure {
                $0.maxConnections = 3
                $0.requestTimeout = .seconds(60)
            }
        ) { server in
            let port = server.port
            try await withThrowingTaskGroup(of: (Int, Bool).self) { group in
                // Three kept-alive connections, each answered before the next opens, so the order in which they
                // began waiting is certain: the listener is full of idle connections.
                for index in 0..<3 {
                    let (answered, signal) = AsyncStream<Void>.makeStream()
                    group.addTask {
                        let closed: Bool
                        do {
                            closed = try await RawConnection.exchange(
                                port: port, Array("GET /livez HTTP/1.1\r\nHost: a\r\n\r\n".utf8),
                                timeout: .seconds(60), firstBytes: { signal.yield() }
                            ).closedByServer
                        } catch {
                            closed = true
                        }
                        signal.finish()
                        return (index, closed)
                    }
                    for await _ in answered { break }
                }
                let health = try await RawConnection.exchange(
                    port: port, Array("GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8),
                    timeout: .seconds(5))
                #expect(health.text.hasPrefix("HTTP/1.1 200"), "\(health.text)")
                // The first to end must be the oldest, closed by the server; the others are still open then.
                let first = try await group.next()
                #expect(first?.0 == 0, "only the oldest was evicted")
                #expect(first?.1 == true, "the oldest was closed by the server")
                group.cancelAll()
            }
        }
    }

    @Test("past the connection limit a connection still sending its head can be evicted too")
    func maxConnectionsTrickling() async throws {
        try await TestServer.with(
            configure: Self.configure {
                $0.maxConnections = 1
                $0.requestTimeout = .seconds(60)
            }
        ) { server in
            let port = server.port
            let trickler = Task { await Self.serverCloses(port, "GET /hea", within: .seconds(20)) }
            // With room for one connection, each /livez that finds the trickler admitted must evict it (the
            // request timeout is 60 s, so nothing else closes it). No order of admission is assumed.
            let finished = Flag()
            Task {
                _ = await trickler.value
                finished.set()
            }
            var answers: [String] = []
            for _ in 0..<50 where !finished.isSet {
                // A reset is an eviction of this connection by the trickler that arrived just after it.
                let exchange = try? await RawConnection.exchange(
                    port: port, Array("GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8),
                    timeout: .seconds(5))
                answers.append(String(exchange?.text.prefix(12) ?? "reset"))
                try await Task.sleep(for: .milliseconds(200))
            }
            // A /livez that arrived just before the trickler may itself have been evicted; the one that evicted
            // the trickler is served.
            #expect(answers.last == "HTTP/1.1 200", "\(answers)")
            #expect(await trickler.value, "the trickling connection was evicted")
        }
    }

    final class Flag: Sendable {
        private let value = Mutex(false)
        var isSet: Bool { value.withLock { $0 } }
        func set() { value.withLock { $0 = true } }
    }

    @Test("a request head over 16 KiB is refused, not buffered")
    func largeHead() async throws {
        try await TestServer.with { server in
            let head =
                "GET /livez HTTP/1.1\r\nHost: a\r\nX-Filler: \(String(repeating: "a", count: 17 * 1024))\r\n\r\n"
            let answer = try await RawConnection.exchange(port: server.port, Array(head.utf8), timeout: .seconds(10))
            #expect(!answer.text.hasPrefix("HTTP/1.1 200"), "\(answer.text.prefix(200))")
            #expect(answer.closedByServer)
            let small = try await RawConnection.exchange(
                port: server.port, Array("GET /livez HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".utf8))
            #expect(small.text.hasPrefix("HTTP/1.1 200"))
        }
    }
}
