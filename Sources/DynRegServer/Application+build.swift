public import DynRegStore
import Foundation
public import Hummingbird
import HummingbirdCore
import HummingbirdTLS
import HTTPTypes
public import Logging
import NIOCore
import NIOSSL
public import ServiceLifecycle

/// The request context: Hummingbird's core plus the peer address for the audit log.
public struct DynRegRequestContext: RequestContext, RemoteAddressRequestContext {
    public var coreContext: CoreRequestContextStorage
    public let remoteAddress: SocketAddress?

    public init(source: ApplicationRequestContextSource) {
        coreContext = .init(source: source)
        remoteAddress = source.channel.remoteAddress
    }

    /// Admin request bodies are small JSON objects.
    public var maxUploadSize: Int { 64 * 1024 }

    var remoteAddressText: String {
        remoteAddress?.ipAddress ?? "unknown"
    }
}

/// Builds the HTTP application: device endpoints, the broker hook, health and the admin API.
///
/// - Parameters:
///   - onListening: called with the bound port once the server accepts connections.
public func buildApplication<Store: RegistrationStore>(
    configuration: ServerConfiguration,
    store: Store,
    services: [any Service] = [],
    logger: Logger,
    onListening: @escaping @Sendable (Int) async -> Void = { _ in }
) throws -> some ApplicationProtocol {
    let authorities = CertificateAuthorities(masterKey: configuration.masterKey)
    let service = RegistrationService<Store>(
        store: store, timestampWindow: configuration.timestampWindow, publicHosts: configuration.publicHosts,
        authorities: authorities)
    let router = Router(context: DynRegRequestContext.self)
    router.add(middleware: LogRequestsMiddleware(.debug, redactHeaders: [DeviceRoutes<Store>.signatureHeader, .authorization]))
    DeviceRoutes<Store>(service: service, maxBodySize: configuration.maxDeviceBodySize).register(on: router)
    router.get("/health") { _, _ -> Response in
        do {
            try await store.checkHealth()
            return .json(status: .ok, #"{"status":"ok"}"#)
        } catch {
            return .json(status: .serviceUnavailable, #"{"status":"unavailable"}"#)
        }
    }
    AdminRoutes<Store>(store: store, token: configuration.adminToken, authorities: authorities).register(on: router.group("/admin/v1"))

    let server: HTTPServerBuilder
    if let tls = configuration.tls {
        let chain = try NIOSSLCertificate.fromPEMFile(tls.certificatePath).map { NIOSSLCertificateSource.certificate($0) }
        let key = try NIOSSLPrivateKey(file: tls.keyPath, format: .pem)
        let tlsConfiguration = TLSConfiguration.makeServerConfiguration(certificateChain: chain, privateKey: .privateKey(key))
        server = try .tls(.http1(), tlsConfiguration: tlsConfiguration)
    } else {
        server = .http1()
    }
    return Application(
        router: router,
        server: server,
        configuration: .init(address: .hostname(configuration.host, port: configuration.port), serverName: nil),
        services: services,
        onServerRunning: { channel in await onListening(channel.localAddress?.port ?? configuration.port) },
        logger: logger
    )
}

extension Response {
    static func json(status: HTTPResponse.Status, _ text: String) -> Response {
        json(status: status, bytes: Array(text.utf8))
    }

    static func json(status: HTTPResponse.Status, bytes: [UInt8]) -> Response {
        Response(
            status: status,
            headers: [.contentType: "application/json; charset=utf-8"],
            body: .init(byteBuffer: ByteBuffer(bytes: bytes)))
    }
}
