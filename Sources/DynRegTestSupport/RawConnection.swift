import NIOCore
import NIOPosix

/// A TCP client that sends bytes exactly as given and reads what comes back, for what an HTTP client library
/// would hide: how an embedded SDK's request is answered, and whether the server closes the connection.
package enum RawConnection {
    package struct Exchange: Sendable {
        /// Every byte the server sent.
        package var bytes: [UInt8]
        /// Whether the server ended the stream before `timeout`.
        package var closedByServer: Bool
        package var text: String { String(decoding: bytes, as: UTF8.self) }
    }

    /// Sends `request` (one or more requests back to back) to 127.0.0.1:`port` and reads until the server closes
    /// the connection or `timeout` passes. `firstBytes` is called once, when the first bytes of the answer arrive.
    /// `later`: more bytes, each sent on the same connection once its time since the connection was made has passed.
    package static func exchange(
        port: Int, _ request: [UInt8], timeout: Duration = .seconds(10),
        later: [(after: Duration, bytes: [UInt8])] = [], firstBytes: (@Sendable () -> Void)? = nil
    ) async throws
        -> Exchange
    {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        let received = Received()
        let closed = try await channel.executeThenClose { inbound, outbound in
            try await outbound.write(ByteBuffer(bytes: request))
            return try await withThrowingTaskGroup(of: Bool.self) { group in
                group.addTask {
                    var first = firstBytes
                    for try await buffer in inbound {
                        await received.append(buffer)
                        first?()
                        first = nil
                    }
                    return true
                }
                group.addTask {
                    try await Task.sleep(for: timeout)
                    return false
                }
                if !later.isEmpty {
                    let start = ContinuousClock.now
                    group.addTask {
                        for part in later {
                            try await Task.sleep(until: start + part.after)
                            try await outbound.write(ByteBuffer(bytes: part.bytes))
                        }
                        // Not an outcome: wait for the reader or the timeout.
                        try await Task.sleep(for: timeout)
                        return false
                    }
                }
                let first = try await group.next() ?? false
                group.cancelAll()
                return first
            }
        }
        return Exchange(bytes: await received.bytes, closedByServer: closed)
    }

    private actor Received {
        var bytes: [UInt8] = []
        func append(_ buffer: ByteBuffer) { bytes += buffer.readableBytesView }
    }
}
