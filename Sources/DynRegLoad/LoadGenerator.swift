import Foundation
import NIOCore
import NIOPosix

/// A failure that ends a run before it starts.
package struct LoadError: Error, CustomStringConvertible {
    package var description: String
    package init(_ description: String) { self.description = description }
}

/// Sends `requests` requests over `connections` keep-alive HTTP/1.1 connections and counts the outcomes.
///
/// A small client written directly on SwiftNIO rather than AsyncHTTPClient: per request one `write` and one
/// `read`, 15-20 µs of client CPU, within noise of `wrk` where AsyncHTTPClient lost 30 % (docs/performance.md).
package struct LoadGenerator: Sendable {
    package var target: LoadTarget
    package var factory: RequestFactory
    package var requests: Int
    package var connections: Int
    /// Seconds to wait for one answer (and for a connection) before counting a transport error.
    package var timeout: Int
    package var threads: Int

    package init(
        target: LoadTarget, factory: RequestFactory, requests: Int, connections: Int, timeout: Int, threads: Int
    ) {
        self.target = target
        self.factory = factory
        self.requests = requests
        self.connections = min(connections, requests)
        self.timeout = timeout
        self.threads = threads
    }

    /// Runs to the end; progress goes to stderr, each plain line after `progressPrefix`, unless it is `nil`.
    /// Throws only when the server cannot be reached at all.
    package func run(progressPrefix: String?) async throws -> LoadResult {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        do {
            let result = try await run(on: group, progressPrefix: progressPrefix)
            try? await group.shutdownGracefully()
            return result
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
    }

    private func run(on group: MultiThreadedEventLoopGroup, progressPrefix: String?) async throws -> LoadResult {
        let address: SocketAddress
        do {
            address = try SocketAddress.makeAddressResolvingHost(target.host, port: target.port)
            try await ClientBootstrap(group: group).connectTimeout(.seconds(5)).connect(to: address)
                .flatMap { $0.close() }.get()
        } catch {
            throw LoadError("cannot connect to \(target.host):\(target.port): \(error)")
        }
        let counters = LoadCounters(total: requests)
        let progress = progressPrefix.map { prefix in
            Task { await LoadProgress(counters: counters, prefix: prefix).run() }
        }
        let loops = Array(group.makeIterator())
        let states = loops.map { LoopState(loop: $0, factory: factory, timeout: timeout) }
        let started = ContinuousClock.now
        var finished: [EventLoopFuture<Void>] = []
        for slot in 0..<connections {
            let state = states[slot % states.count]
            let worker = ConnectionWorker(state: state, counters: counters, address: address)
            finished.append(worker.finished.futureResult)
            state.loop.execute { worker.start() }
        }
        try await EventLoopFuture.andAllSucceed(finished, on: loops[0]).get()
        let elapsed = (ContinuousClock.now - started).components
        var total = LoadTally(timeout: timeout)
        for state in states {
            total.add(try await state.loop.submit { state.tally }.get())
        }
        progress?.cancel()
        await progress?.value
        return LoadResult(
            tally: total, durationSeconds: Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18)
    }
}

/// What one event loop's connections share; touched only on that loop, hence no locks.
final class LoopState: @unchecked Sendable {
    let loop: any EventLoop
    var factory: RequestFactory
    var tally: LoadTally
    let timeout: Int

    init(loop: any EventLoop, factory: RequestFactory, timeout: Int) {
        self.loop = loop
        self.factory = factory
        self.timeout = timeout
        tally = LoadTally(timeout: timeout)
    }
}

/// One connection slot: sends a request, waits for the whole answer, sends the next; reconnects when the server
/// closes. Every claimed index ends as exactly one outcome. Confined to `state.loop`.
final class ConnectionWorker: @unchecked Sendable {
    let state: LoopState
    let counters: LoadCounters
    let address: SocketAddress
    let finished: EventLoopPromise<Void>
    private var channel: (any Channel)?
    private var inFlight: Int?
    private var sentAt: NIODeadline = .uptimeNanoseconds(0)
    private var inbound: ByteBuffer?
    private var lastError: String?
    private var watchdog: RepeatedTask?

    init(state: LoopState, counters: LoadCounters, address: SocketAddress) {
        self.state = state
        self.counters = counters
        self.address = address
        finished = state.loop.makePromise()
    }

    func start() {
        let limit = TimeAmount.seconds(Int64(state.timeout))
        watchdog = state.loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
            if inFlight != nil, NIODeadline.now() - sentAt > limit {
                lastError = "no answer within \(state.timeout) s"
                channel?.close(promise: nil)
            }
        }
        connect()
    }

    private func connect() {
        guard let index = counters.claim() else {
            watchdog?.cancel()
            finished.succeed(())
            return
        }
        // Sent once the channel is active; a failed connect never becomes active.
        inFlight = index
        sentAt = .now()
        ClientBootstrap(group: state.loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(Int64(state.timeout)))
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(ConnectionHandler(worker: self))
                }
            }
            .connect(to: address)
            .whenFailure { [self] error in
                if inFlight != nil {
                    inFlight = nil
                    fail("\(error)")
                }
                // Through the loop, so that a refusing server cannot grow the stack.
                state.loop.execute { self.connect() }
            }
    }

    fileprivate func active(_ channel: any Channel) {
        self.channel = channel
        if let index = inFlight { send(index, on: channel) }
    }

    private func send(_ index: Int, on channel: any Channel) {
        var buffer = channel.allocator.buffer(capacity: 512)
        state.factory.write(index: index, timestamp: Int64(time(nil)), into: &buffer)
        inFlight = index
        sentAt = .now()
        channel.writeAndFlush(buffer, promise: nil)
    }

    private func fail(_ description: String) {
        state.tally.recordTransportError(description)
        counters.complete()
    }

    fileprivate func received(_ buffer: ByteBuffer, on channel: any Channel) {
        if inbound == nil {
            inbound = buffer
        } else {
            var more = buffer
            inbound!.writeBuffer(&more)
        }
        guard inFlight != nil else {
            lastError = "an answer nobody asked for"
            channel.close(promise: nil)
            return
        }
        let mode = state.factory.mode
        let scan = inbound!.withUnsafeReadableBytes { bytes in
            HTTPResponseScanner.scan(bytes) { status, body in mode.outcome(status: status, body: body) }
        }
        switch scan {
        case .incomplete:
            return
        case .invalid(let reason):
            lastError = reason
            channel.close(promise: nil)
        case .complete(let outcome, let consumed, let close):
            inFlight = nil
            state.tally.record(outcome: outcome, micros: (NIODeadline.now() - sentAt).nanoseconds / 1000)
            counters.complete()
            inbound!.moveReaderIndex(forwardBy: consumed)
            if inbound!.readableBytes == 0 { inbound = nil }
            if close {
                channel.close(promise: nil)
            } else if let next = counters.claim() {
                send(next, on: channel)
            } else {
                // All claimed: connect() will find nothing more and finish.
                channel.close(promise: nil)
            }
        }
    }

    fileprivate func errorCaught(_ error: any Error) {
        if lastError == nil { lastError = "\(error)" }
    }

    fileprivate func closed() {
        channel = nil
        inbound = nil
        if inFlight != nil {
            inFlight = nil
            fail(lastError ?? "the server closed the connection")
        }
        lastError = nil
        state.loop.execute { self.connect() }
    }
}

private final class ConnectionHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let worker: ConnectionWorker

    init(worker: ConnectionWorker) { self.worker = worker }

    func channelActive(context: ChannelHandlerContext) {
        worker.active(context.channel)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        worker.received(unwrapInboundIn(data), on: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        worker.closed()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        worker.errorCaught(error)
        context.close(promise: nil)
    }
}
