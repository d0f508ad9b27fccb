package import DynRegStore
import Foundation
import HTTPTypes
package import Hummingbird
import HummingbirdCore
import HummingbirdTLS
package import Logging
import NIOCore
import NIOSSL
package import ServiceLifecycle

/// The request context: Hummingbird's core plus the peer address for the audit log.
package struct DynRegRequestContext: RequestContext, RemoteAddressRequestContext {
    package var coreContext: CoreRequestContextStorage
    package let remoteAddress: SocketAddress?
    /// The client's address from `X-Forwarded-For`, when the peer is a trusted proxy (``ClientAddressMiddleware``).
    var clientAddress: String?
    /// The fingerprint of the admin token that authenticated the request (``TokenDigest/fingerprint``).
    var adminTokenFingerprint: String?
    /// The connection, for the device routes that close it after answering.
    let channel: any Channel

    package init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
        channel = source.channel
    }

    /// Admin request bodies are small JSON objects.
    package var maxUploadSize: Int { 64 * 1024 }

    /// The client as the audit log and the limits see it.
    var remoteAddressText: String {
        clientAddress ?? remoteAddress?.ipAddress ?? "unknown"
    }
}

/// Why the server did not start: which step before it failed, and the cause.
package struct StartupError: Error, CustomStringConvertible {
    package enum Step: Sendable, Hashable {
        /// `store.migrate()`: the database cannot be reached, logged in to or migrated.
        case store
        /// The master key does not open the CA keys or product secrets in the store (the migration that seals
        /// secrets checks it too, before it seals anything).
        case masterKey
    }

    package var step: Step
    package var underlying: any Error

    package var description: String { "\(underlying)" }
}

/// Builds the HTTP application: device endpoints, the broker hook, health and the admin API.
///
/// The application runs `store` (a `Service`) in its ServiceGroup: started before the HTTP server and stopped
/// after it has drained, so every answered request had a store. Before the server accepts connections it
/// migrates the store, checks that the master key opens its CA keys and product secrets (failing with a
/// ``StartupError``) and then runs `beforeServerStarts`.
///
/// - Parameters:
///   - metrics: what `GET /metrics` shows; the store's share arrives through its ``ServerMetrics/factory``.
///   - services: more services for the same group (a nonce sweeper), stopped before the store.
///   - beforeServerStarts: the caller's last step before the server starts (creating a demo product).
///   - onListening: called with the bound port once the server accepts connections.
package func buildApplication<Store: RegistrationStore>(
    configuration: ServerConfiguration,
    store: Store,
    metrics: ServerMetrics = ServerMetrics(),
    services: [any Service] = [],
    logger: Logger,
    onListening: @escaping @Sendable (Int) async -> Void = { _ in },
    beforeServerStarts: @escaping @Sendable () async throws -> Void = {}
) throws -> some ApplicationProtocol {
    let authorities = CertificateAuthorities(masterKey: configuration.masterKey)
    let notifier = RevocationNotifier()
    let refusals = RefusalTally(metrics: metrics, logger: logger) { try await store.recordRefusals($0) }
    let lockouts = SignatureLockouts(
        policy: configuration.limits.lockout, store: store, metrics: metrics, logger: logger)
    let productLimits = ProductLimitsCache(store: store)
    let service = RegistrationService<Store>(
        store: store, timestampWindow: configuration.timestampWindow, publicHosts: configuration.publicHosts,
        authorities: authorities, revocations: notifier, metrics: metrics, refusals: refusals,
        guards: RegistrationGuards(limits: configuration.limits, lockouts: lockouts, productLimits: productLimits))
    // Stopped before the store: their last writes happen while the store still runs.
    var services =
        services + [
            refusals, lockouts,
            AuditRetention(store: store, retention: configuration.eventRetention, metrics: metrics, logger: logger),
        ]
    if let directory = configuration.crlDirectory {
        services.append(
            CRLPublisher(
                store: store, authorities: authorities, directory: directory, command: configuration.crlUpdatedCommand,
                refresh: configuration.crlRefresh, notifier: notifier, logger: logger))
    }
    let router = Router(context: DynRegRequestContext.self)
    if !configuration.trustedProxies.isEmpty {
        router.add(middleware: ClientAddressMiddleware(trusted: configuration.trustedProxies))
    }
    router.add(
        middleware: LogRequestsMiddleware(.debug, redactHeaders: [DeviceRoutes<Store>.signatureHeader, .authorization]))
    DeviceRoutes<Store>(service: service, maxBodySize: configuration.maxDeviceBodySize).register(on: router)
    BrokerRoutes<Store>(
        service: BrokerService(store: store, maxLoginLifetime: configuration.maxLoginLifetime, metrics: metrics),
        token: configuration.brokerToken, maxBodySize: configuration.maxDeviceBodySize
    ).register(on: router)
    let monitor = HealthMonitor(store: store)
    services.append(monitor)
    @Sendable func health(_: Request, _: DynRegRequestContext) async -> Response {
        await monitor.isHealthy()
            ? .json(status: .ok, #"{"status":"ok"}"#) : .json(status: .serviceUnavailable, #"{"status":"unavailable"}"#)
    }
    router.get("/health", use: health)
    // Liveness: the process answers HTTP. It touches nothing, so it is also the ceiling the benchmark compares with.
    router.get("/livez") { _, _ in Response.json(status: .ok, #"{"status":"ok"}"#) }
    router.head("/livez") { _, _ in Response(status: .ok, headers: [.contentType: "application/json; charset=utf-8"]) }
    // Load balancers and probes that check with HEAD: the same status and headers, no body.
    router.head("/health") { request, context -> Response in
        var response = await health(request, context)
        response.body = ResponseBody()
        return response
    }
    // One count of wrong tokens per address, whichever route they were tried on: the API, metrics, the console.
    let throttle = AdminLoginThrottle()
    let admin = AdminRoutes<Store>(
        store: store, token: configuration.adminToken, authorities: authorities, revocations: notifier,
        throttle: throttle, metrics: metrics, refusals: refusals, lockouts: lockouts, productLimits: productLimits)
    admin.register(on: router.group("/admin/v1"))
    MetricsRoute(
        metrics: metrics, store: store,
        authentication: BearerTokenMiddleware(
            tokens: [configuration.adminToken] + [configuration.metricsToken].compactMap { $0 }, throttle: throttle,
            metrics: metrics)
    ).register(on: router)
    ConsoleRoutes<Store>(
        administration: admin.administration, token: TokenDigest(configuration.adminToken), throttle: throttle,
        sessions: ConsoleSessions(), assets: try ConsoleAssets(), secureCookie: configuration.tls != nil
    ).register(on: router.group("/console"))

    let gauge = ConnectionGauge(limit: configuration.connections.maxConnections)
    let server: HTTPServerBuilder
    if let tls = configuration.tls {
        let chain = try NIOSSLCertificate.fromPEMFile(tls.certificatePath).map {
            NIOSSLCertificateSource.certificate($0)
        }
        let key = try NIOSSLPrivateKey(file: tls.keyPath, format: .pem)
        let tlsConfiguration = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain, privateKey: .privateKey(key))
        server = try .tls(
            .guardedHTTP1(limits: configuration.connections, gauge: gauge), tlsConfiguration: tlsConfiguration)
    } else {
        server = .guardedHTTP1(limits: configuration.connections, gauge: gauge)
    }
    // The store first: a ServiceGroup stops its services in reverse order, so the store outlives the others.
    var app = Application(
        router: router,
        server: server,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
        services: [store as any Service] + services,
        onServerRunning: { channel in
            notifier.changed()  // migrated: the CRL directory may be written
            await onListening(channel.localAddress?.port ?? configuration.port)
        },
        logger: logger
    )
    let masterKey = configuration.masterKey
    app.beforeServerStarts {
        do {
            _ = try await store.migrate()
        } catch let error as MasterKeyError {
            throw StartupError(step: .masterKey, underlying: error)
        } catch {
            throw StartupError(step: .store, underlying: error)
        }
        do {
            try await checkMasterKey(masterKey, store: store)
        } catch {
            throw StartupError(step: .masterKey, underlying: error)
        }
        try await beforeServerStarts()
    }
    return app
}

extension Response {
    static func json(status: HTTPResponse.Status, _ text: String) -> Response {
        json(status: status, bytes: Array(text.utf8))
    }

    /// This answer, after which the server closes its side of the connection: a client reading until the end of
    /// the stream has the whole answer at once.
    /// `stopReading`: for a request whose body is still arriving. The server reads no more of it (the request
    /// timeout then ends the connection), rather than drain gigabytes nobody wants.
    func closingConnection(_ channel: any Channel, stopReading: Bool = false) -> Response {
        var response = self
        response.headers[.connection] = "close"
        let body = self.body
        response.body = ResponseBody(contentLength: body.contentLength) { writer in
            try await body.write(writer)
            // After the answer's last byte: NIO shuts the socket's output once pending writes are done.
            channel.close(mode: .output, promise: nil)
            if stopReading { _ = channel.setOption(ChannelOptions.autoRead, value: false) }
        }
        return response
    }

    static func json(status: HTTPResponse.Status, bytes: [UInt8]) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
