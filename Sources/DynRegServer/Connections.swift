import HTTPTypes
import HummingbirdCore
import Logging
import NIOCore
import NIOHTTP1
import NIOHTTPTypes
import NIOHTTPTypesHTTP1
import Synchronization

/// How long and how many connections the public listener holds (`dynreg serve --idle-timeout`, `--request-timeout`,
/// `--max-connections`). Every limit is on by default: these are what an unauthenticated client can make the server
/// spend.
package struct ConnectionLimits: Sendable, Hashable {
    /// A kept-alive connection with no request in progress is closed after this.
    package var idleTimeout: Duration = .seconds(60)
    /// From the connection's start, or from the first byte of a request after an answer, until the request's last
    /// byte: the TLS handshake, the head and the body must all arrive within it.
    package var requestTimeout: Duration = .seconds(10)
    /// Connections at once; one more is closed as soon as it is accepted.
    package var maxConnections: Int = 1_000
    /// A request head (request line and headers) larger than this is refused with 431 before it is all read.
    package var maxHeadSize: Int = 16 * 1024

    package init() {}
}

/// The open connections of one listener, against ``ConnectionLimits/maxConnections``.
///
/// At the limit a new connection evicts the connection that has waited longest while idle or while still sending
/// its request (a silent or trickling connection: devices send theirs in milliseconds), so that a flood of idle
/// connections cannot lock devices out. A connection whose request is being answered is never evicted; when every
/// connection is, the new one is closed at once.
package final class ConnectionGauge: Sendable {
    private struct Entry {
        let channel: any Channel
        /// Since when it has been idle or sending its request; `nil` while its request is being answered.
        var waitingSince: NIODeadline?
    }

    private let entries = Mutex<[ObjectIdentifier: Entry]>([:])
    let limit: Int

    package init(limit: Int) { self.limit = limit }

    /// Counts `connection` in; at the limit, evicts the longest-waiting one. False when nothing could be evicted.
    func admit(_ connection: ObjectIdentifier, channel: any Channel, now: NIODeadline) -> Bool {
        let (admitted, victim) = entries.withLock { entries -> (Bool, (any Channel)?) in
            var victim: (any Channel)?
            if entries.count >= limit {
                // One pass, without copying the table: this runs for every connection while the listener is full.
                var oldest: (key: ObjectIdentifier, since: NIODeadline)?
                for (key, entry) in entries {
                    guard let since = entry.waitingSince, since < oldest?.since ?? .distantFuture else { continue }
                    oldest = (key, since)
                }
                guard let oldest else { return (false, nil) }
                victim = entries.removeValue(forKey: oldest.key)?.channel
            }
            entries[connection] = Entry(channel: channel, waitingSince: now)
            return (true, victim)
        }
        victim?.close(promise: nil)
        return admitted
    }

    /// The connection waits (idle, or sending a request) since `since`, or, with `nil`, is being answered.
    func update(_ connection: ObjectIdentifier, waitingSince since: NIODeadline?) {
        entries.withLock { $0[connection]?.waitingSince = since }
    }

    func release(_ connection: ObjectIdentifier) { _ = entries.withLock { $0.removeValue(forKey: connection) } }

    var open: Int { entries.withLock { $0.count } }
}

/// HTTP/1.1 as Hummingbird serves it, with ``ConnectionGuard`` first in every connection's pipeline and
/// ``RequestProgressHandler`` after the HTTP decoder to tell it where requests end.
struct GuardedHTTP1Channel: ServerChildChannel {
    typealias Value = HTTP1Channel.Value
    let inner: HTTP1Channel
    let limits: ConnectionLimits
    let gauge: ConnectionGauge

    init(responder: @escaping HTTPChannelHandler.Responder, limits: ConnectionLimits, gauge: ConnectionGauge) {
        let configuration = HTTP1Channel.Configuration(
            additionalChannelHandlers: [RequestProgressHandler()],
            idleTimeout: TimeAmount(limits.idleTimeout),
            httpDecoderConfiguration: .init(
                maxHeaderFieldSize: limits.maxHeadSize, maxHeaderListSize: limits.maxHeadSize,
                maxHeaderFieldCount: 100))
        inner = HTTP1Channel(responder: responder, configuration: configuration)
        self.limits = limits
        self.gauge = gauge
    }

    func setup(channel: any Channel, logger: Logger) -> EventLoopFuture<Value> {
        channel.eventLoop.makeCompletedFuture {
            try channel.pipeline.syncOperations.addHandler(
                ConnectionGuard(gauge: gauge, requestTimeout: TimeAmount(limits.requestTimeout)), position: .first)
        }.flatMap {
            inner.setup(channel: channel, logger: logger)
        }.flatMapThrowing { value in
            // Where the HTTP version is still known: HTTPTypes, after the codec, has none.
            let codec = try channel.pipeline.syncOperations.handler(type: HTTP1ToHTTPServerCodec.self)
            try channel.pipeline.syncOperations.addHandler(HTTP10Closing(), position: .before(codec))
            return value
        }
    }

    func handle(value: Value, logger: Logger) async {
        await inner.handle(value: value, logger: logger)
    }
}

extension HTTPServerBuilder {
    /// ``GuardedHTTP1Channel``; wrap it in `.tls(…)` for HTTPS (the guard then also times the handshake).
    static func guardedHTTP1(limits: ConnectionLimits, gauge: ConnectionGauge) -> HTTPServerBuilder {
        HTTPServerBuilder { responder in GuardedHTTP1Channel(responder: responder, limits: limits, gauge: gauge) }
    }
}

/// First in the pipeline: counts the connection against the gauge (closing it at once when the listener is full)
/// and closes it when a request takes longer than the request timeout to arrive. Confined to its event loop.
final class ConnectionGuard: ChannelInboundHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = ByteBuffer

    private let gauge: ConnectionGauge
    private let requestTimeout: TimeAmount
    private var admitted = false

    private enum Phase {
        /// Since the first byte of a request (or the connection's start), until its last byte.
        case receiving(since: NIODeadline)
        /// Its last byte read, the answer not yet written: no time limit, and bytes that come meanwhile (a pipelined
        /// request) do not start one.
        case answering
        case idle
    }

    private var phase = Phase.idle
    /// The pending check of the time limit. Scheduled at most once per time limit, not on every request: a request
    /// moves the limit, and the check, when due, schedules itself again for the limit as it is then.
    private var check: Scheduled<Void>?

    init(gauge: ConnectionGauge, requestTimeout: TimeAmount) {
        self.gauge = gauge
        self.requestTimeout = requestTimeout
    }

    func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive { start(context) }
    }

    func channelActive(context: ChannelHandlerContext) {
        start(context)
        if admitted { context.fireChannelActive() }
    }

    private func start(_ context: ChannelHandlerContext) {
        guard !admitted, check == nil else { return }
        let now = NIODeadline.now()
        guard gauge.admit(ObjectIdentifier(self), channel: context.channel, now: now) else {
            context.close(promise: nil)
            return
        }
        admitted = true
        receive(context, since: now)
    }

    func channelInactive(context: ChannelHandlerContext) {
        check?.cancel()
        check = nil
        phase = .idle
        if admitted {
            admitted = false
            gauge.release(ObjectIdentifier(self))
        }
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard admitted else { return }
        if case .idle = phase { receive(context, since: .now()) }
        context.fireChannelRead(data)
    }

    private func receive(_ context: ChannelHandlerContext, since: NIODeadline) {
        phase = .receiving(since: since)
        if check == nil { scheduleCheck(context, at: since + requestTimeout) }
    }

    private func scheduleCheck(_ context: ChannelHandlerContext, at due: NIODeadline) {
        check = context.eventLoop.assumeIsolated().scheduleTask(deadline: due) { [weak self] in
            guard let self else { return }
            self.check = nil
            // Idle or answering: the next request schedules a check again.
            guard case .receiving(let since) = self.phase else { return }
            let limit = since + self.requestTimeout
            if NIODeadline.now() >= limit {
                context.close(promise: nil)
            } else {
                self.scheduleCheck(context, at: limit)
            }
        }
    }

    /// The request's last byte has been read: the time limit is over until the next request begins, and the
    /// connection may not be evicted while it is answered.
    func requestReceived() {
        phase = .answering
        gauge.update(ObjectIdentifier(self), waitingSince: nil)
    }

    /// The answer has been written: the next byte starts a new request; until then the connection is idle.
    func answerSent() {
        phase = .idle
        gauge.update(ObjectIdentifier(self), waitingSince: .now())
    }
}

/// After the HTTP decoder: tells the connection's ``ConnectionGuard`` where each request ends and each answer ends.
final class RequestProgressHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPRequestPart
    typealias InboundOut = HTTPRequestPart
    typealias OutboundIn = HTTPResponsePart
    typealias OutboundOut = HTTPResponsePart

    private var guardHandler: ConnectionGuard?

    func handlerAdded(context: ChannelHandlerContext) {
        guardHandler = try? context.pipeline.syncOperations.handler(type: ConnectionGuard.self)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .end = unwrapInboundIn(data) { guardHandler?.requestReceived() }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if case .end = unwrapOutboundIn(data) { guardHandler?.answerSent() }
        context.write(data, promise: promise)
    }
}

/// HTTP/1.0 without `Connection: keep-alive` means one request per connection: close after the answer, as
/// HTTP/1.0 clients wait for.
final class HTTP10Closing: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias InboundOut = HTTPServerRequestPart
    typealias OutboundIn = HTTPServerResponsePart
    typealias OutboundOut = HTTPServerResponsePart

    private var closeAfterAnswer = false

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        if case .head(let head) = unwrapInboundIn(data) {
            closeAfterAnswer = head.version == .http1_0 && !head.isKeepAlive
        }
        context.fireChannelRead(data)
    }

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard case .end = unwrapOutboundIn(data), closeAfterAnswer else {
            context.write(data, promise: promise)
            return
        }
        let written = promise ?? context.eventLoop.makePromise()
        context.write(data, promise: written)
        written.futureResult.assumeIsolated().whenComplete { _ in context.close(promise: nil) }
    }
}
