import DynRegClient
import DynRegProtocol
import Foundation
import HTTPTypes
import HummingbirdCore
import HummingbirdTLS
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import Testing

/// Test fixtures: one product, one device.
enum Fixture {
    static let productId = "ASJ1234GX"
    static let deviceName = "860000000000001"
    static let productSecret = "kQ3n8ZpX2vLw7RtY5mB1cD4f"
    /// Base64 of 16 bytes.
    static let psk = "aGVsbG8gd29ybGQgMTIzNA=="
}

/// A request as the server received it.
struct RecordedRequest: Sendable {
    var path: String
    /// The `Host` header.
    var authority: String?
    /// Header values by lower-case name.
    var headers: [String: String]
    var body: [UInt8]

    var timestamp: Int64? { headers["x-tc-timestamp"].flatMap(DecimalField.parse) }
}

/// What the scripted server does with one request.
indirect enum ScriptedAnswer: Sendable {
    case reply([UInt8], status: HTTPResponse.Status = .ok, headers: [String: String] = [:])
    /// Close the connection without answering.
    case drop
    case delayed(Duration, then: ScriptedAnswer)

    static func success(
        _ credential: DeviceCredential = .key(psk: Fixture.psk), encryptedWith secret: String = Fixture.productSecret,
        requestId: String = "request-ok"
    ) -> ScriptedAnswer {
        .reply(
            RegistrationReply.success(try! credential.encrypted(productSecret: secret), requestId: requestId)
                .encodedJSON())
    }

    static func failure(
        _ code: RegistrationErrorCode, message: String? = nil, requestId: String = "request-failed",
        headers: [String: String] = [:]
    ) -> ScriptedAnswer {
        .reply(
            RegistrationReply.failure(code: code.code, message: message ?? code.defaultMessage, requestId: requestId)
                .encodedJSON(), headers: headers)
    }

    static func legacySuccess(
        _ credential: DeviceCredential = .key(psk: Fixture.psk), requestId: String = "legacy-ok"
    ) -> ScriptedAnswer {
        .reply(
            LegacyRegistrationReply.success(
                try! credential.encrypted(productSecret: Fixture.productSecret), requestId: requestId
            ).encodedJSON())
    }

    static func legacyFailure(
        _ code: RegistrationErrorCode, requestId: String = "legacy-failed", headers: [String: String] = [:]
    ) -> ScriptedAnswer {
        .reply(
            LegacyRegistrationReply.failure(code: code.legacyCode, message: code.defaultMessage, requestId: requestId)
                .encodedJSON(), headers: headers)
    }
}

/// The requests a scripted server received, in order.
actor RequestLog {
    private(set) var requests: [RecordedRequest] = []

    var count: Int { requests.count }

    /// Records a request and returns its 1-based number.
    func record(_ request: RecordedRequest) -> Int {
        requests.append(request)
        return requests.count
    }
}

/// Runs a real HTTP server on 127.0.0.1 (port chosen by the system) that answers each request as `script` says,
/// and calls `body` with its base URL; with `tls`, over HTTPS. HummingbirdCore rather than Hummingbird's
/// `Application`, because `Application` overwrites the `Date` header that the clock-skew tests need to control.
func withScriptedServer(
    tls: TLSConfiguration? = nil,
    _ script: @escaping @Sendable (_ number: Int, _ request: RecordedRequest) -> ScriptedAnswer,
    _ body: (_ baseURL: String, _ log: RequestLog) async throws -> Void
) async throws {
    let log = RequestLog()
    let responder: HTTPChannelHandler.Responder = { request, responseWriter, channel in
        var request = request
        let buffer = try await request.collectBody(upTo: 1 << 16)
        var headers: [String: String] = [:]
        for field in request.headers { headers[field.name.canonicalName] = field.value }
        let recorded = RecordedRequest(
            path: request.uri.path, authority: request.head.authority, headers: headers,
            body: Array(buffer.readableBytesView))
        let number = await log.record(recorded)
        var answer = script(number, recorded)
        while case .delayed(let delay, let next) = answer {
            try await Task.sleep(for: delay)
            answer = next
        }
        switch answer {
        case .drop:
            try await channel.close()
        case .reply(let bytes, let status, let extraHeaders):
            var fields: HTTPFields = [:]
            fields[.contentType] = "application/json"
            fields[.contentLength] = String(bytes.count)
            for (name, value) in extraHeaders { fields[HTTPField.Name(name)!] = value }
            try await responseWriter.write(
                response: HTTPResponse(status: status, headerFields: fields),
                body: ResponseBody(byteBuffer: ByteBuffer(bytes: bytes)))
        case .delayed:
            preconditionFailure("unwrapped above")
        }
    }
    var logger = Logger(label: "scripted-registration-server")
    logger.logLevel = .critical
    if let tls {
        try await serve(
            try TLSChannel(HTTP1Channel(responder: responder), tlsConfiguration: tls), scheme: "https",
            logger: logger, log: log, body)
    } else {
        try await serve(HTTP1Channel(responder: responder), scheme: "http", logger: logger, log: log, body)
    }
}

private func serve<Channel: ServerChildChannel>(
    _ childChannel: Channel, scheme: String, logger: Logger, log: RequestLog,
    _ body: (_ baseURL: String, _ log: RequestLog) async throws -> Void
) async throws {
    let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
    let server = Server(
        childChannelSetup: childChannel,
        configuration: ServerConfiguration(address: .hostname("127.0.0.1", port: 0)),
        onServerRunning: { channel in
            portContinuation.yield(channel.localAddress?.port ?? 0)
            portContinuation.finish()
        },
        eventLoopGroup: MultiThreadedEventLoopGroup.singleton,
        logger: logger)
    try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await server.run() }
        var iterator = ports.makeAsyncIterator()
        guard let port = await iterator.next(), port > 0 else {
            try? await server.shutdownGracefully()
            throw ServerStartFailure()
        }
        do {
            try await body("\(scheme)://127.0.0.1:\(port)", log)
        } catch {
            try? await server.shutdownGracefully()
            throw error
        }
        try await server.shutdownGracefully()
        try await group.waitForAll()
    }
}

struct ServerStartFailure: Error {}

/// Registrar settings that keep the suite fast: short backoff, a timeout generous enough for a loaded machine.
func fastConfiguration(
    _ baseURL: String, registrationProtocol: RegistrationProtocol = .current, maxAttempts: Int = 4,
    timeout: Duration = .seconds(5)
) -> DeviceRegistrar.Configuration {
    DeviceRegistrar.Configuration(
        endpoint: RegistrationEndpoint(string: baseURL)!,
        registrationProtocol: registrationProtocol,
        timeout: timeout,
        retry: RetryPolicy(maxAttempts: maxAttempts, baseDelay: .milliseconds(10), maxDelay: .milliseconds(50)))
}

/// `Date` header value (IMF-fixdate) for a Unix time.
func httpDate(_ unixTime: Int64) -> String {
    let formatter = DateFormatter()
    formatter.locale = Locale(identifier: "en_US_POSIX")
    formatter.timeZone = TimeZone(identifier: "GMT")
    formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss 'GMT'"
    return formatter.string(from: Date(timeIntervalSince1970: TimeInterval(unixTime)))
}

func unixNow() -> Int64 { Int64(Date().timeIntervalSince1970) }

extension DeviceRegistrar {
    /// Registers the fixture device of the fixture product.
    func registerFixture() async throws -> RegisteredCredential {
        try await register(
            productId: Fixture.productId, deviceName: Fixture.deviceName, productSecret: Fixture.productSecret)
    }
}

/// What registering the fixture device against `baseURL` fails with.
func fixtureRegistrationError(_ baseURL: String) async throws -> RegistrationError {
    let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL))
    return try await #require(throws: RegistrationError.self) { try await registrar.registerFixture() }
}
