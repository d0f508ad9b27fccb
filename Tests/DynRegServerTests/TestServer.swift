import AsyncHTTPClient
import DynRegCA
import DynRegProtocol
import DynRegServer
import DynRegStore
import DynRegTestSupport
import Foundation
import Logging
import NIOCore
import NIOHTTP1
import NIOSSL
import ServiceLifecycle
import Testing

/// A real `dynreg` server on a loopback port with a real SQLite file in a fresh directory.
struct TestServer {
    static let adminToken = LiveServer.adminToken
    /// What a broker sends to the broker endpoints.
    static let brokerAuthorization = [("Authorization", "Bearer \(LiveServer.brokerToken)")]
    static let masterKey = LiveServer.masterKey

    let baseURL: String
    let port: Int
    let store: SQLiteStore
    let directory: URL
    let client: HTTPClient

    /// Starts a real server (see `LiveServer`), runs `body` with an HTTP client for it, and shuts both down.
    static func with<T: Sendable>(
        directory: URL? = nil,
        masterKey: MasterKey = TestServer.masterKey,
        configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (TestServer) async throws -> T
    ) async throws -> T {
        try await LiveServer.with(directory: directory, masterKey: masterKey, configure: configure) { live in
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.certificateVerification = .none
            var configuration = HTTPClient.Configuration(tlsConfiguration: tls)
            // Tests send up to 100 requests at once: a connection each, rather than queueing for eight.
            configuration.connectionPool = .init(
                idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 128)
            configuration.timeout = .init(connect: .seconds(30), read: .seconds(30))
            // The console answers with 303s whose headers (Set-Cookie, Location) the tests read.
            configuration.redirectConfiguration = .disallow
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: configuration)
            let server = TestServer(
                baseURL: live.baseURL, port: live.port, store: live.store, directory: live.directory, client: client)
            do {
                let result = try await body(server)
                try await client.shutdown()
                return result
            } catch {
                try? await client.shutdown()
                throw error
            }
        }
    }

    // MARK: HTTP

    struct Answer {
        var status: Int
        var body: [UInt8]
        var headers: HTTPHeaders
        var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body)) as? [String: Any]) ?? [:]
        }
        var text: String { String(decoding: body, as: UTF8.self) }
    }

    func send(
        _ method: HTTPMethod, _ path: String, headers: [(String, String)] = [], body: [UInt8]? = nil
    ) async throws -> Answer {
        var request = HTTPClientRequest(url: baseURL + path)
        request.method = method
        for (name, value) in headers { request.headers.add(name: name, value: value) }
        if let body { request.body = .bytes(ByteBuffer(bytes: body)) }
        let response = try await client.execute(request, timeout: .seconds(30))
        let buffer = try await response.body.collect(upTo: 1 << 20)
        return Answer(status: Int(response.status.code), body: Array(buffer: buffer), headers: response.headers)
    }

    func admin(
        _ method: HTTPMethod, _ path: String, json: String? = nil, token: String? = adminToken
    ) async throws
        -> Answer
    {
        var headers: [(String, String)] = [("Content-Type", "application/json")]
        if let token { headers.append(("Authorization", "Bearer \(token)")) }
        return try await send(method, "/admin/v1" + path, headers: headers, body: json.map { Array($0.utf8) })
    }

    /// A server with one key product (auto-create on), where most tests start.
    static func withKeyProduct<T: Sendable>(
        _ body: (TestServer, (id: String, secret: String)) async throws -> T
    ) async throws -> T {
        try await with { server in try await body(server, try await server.createProduct()) }
    }

    /// A certificate product; `fields` are more JSON members of the creation body, e.g. `"caKeyType":"rsa2048"`.
    func createCertificateProduct(_ fields: String = "") async throws -> (id: String, secret: String) {
        try await createProduct(#"{"name":"cams","authType":"certificate"\#(fields.isEmpty ? "" : "," + fields)}"#)
    }

    /// Creates a product through the admin API and returns (productId, productSecret).
    func createProduct(_ json: String = #"{"name":"test"}"#) async throws -> (id: String, secret: String) {
        let answer = try await admin(.POST, "/products", json: json)
        #expect(answer.status == 201)
        let object = answer.json
        guard let id = object["productId"] as? String, let secret = object["productSecret"] as? String else {
            throw TestFailure("product creation answered \(answer.text)")
        }
        return (id, secret)
    }

    // MARK: Device requests

    /// Signs and sends `POST /device/register` as an SDK would.
    func register(
        productId: String, deviceName: String, secret: String,
        algorithm: DynRegProtocol.SignatureAlgorithm = .hmacSHA256,
        bodyHash: BodyHash? = nil, signedHost: String = "127.0.0.1", hostHeader: String? = nil,
        timestamp: Int64 = Int64(Date().timeIntervalSince1970), nonce: Int64 = Int64.random(in: 0...Int64(Int32.max)),
        body: [UInt8]? = nil, algorithmHeader: String? = nil, forwardedFor: String? = nil
    ) async throws -> Answer {
        var signed = SignedRequest(
            registering: RegistrationRequestBody(productId: productId, deviceName: deviceName),
            canonicalHost: signedHost, algorithm: algorithm, timestamp: timestamp, nonce: nonce)
        if let body { signed.body = body }
        var headers = signed.headers(productSecret: secret, bodyHash: bodyHash)
        if let algorithmHeader {
            headers = headers.map { $0.0 == DeviceRequestHeader.algorithm ? ($0.0, algorithmHeader) : $0 }
        }
        if let hostHeader { headers.append(("Host", hostHeader)) }
        if let forwardedFor { headers.append(("X-Forwarded-For", forwardedFor)) }
        return try await send(.POST, RegistrationPath.current, headers: headers, body: signed.body)
    }

    /// Registers a device of a key product and returns its psk.
    func registeredPSK(_ product: (id: String, secret: String), deviceName: String) async throws -> String {
        let answer = try await register(productId: product.id, deviceName: deviceName, secret: product.secret)
        guard let psk = try answer.credential(secret: product.secret).psk else {
            throw TestFailure("no psk in \(answer.text)")
        }
        return psk
    }

    /// Signs and sends the legacy `POST /register/dev` as the C SDK does.
    /// `spaced` puts a space after the body's `{`: the same signed fields in another request.
    func registerLegacy(
        productId: String, deviceName: String, secret: String,
        timestamp: Int64 = Int64(Date().timeIntervalSince1970), nonce: Int64 = Int64.random(in: 0...Int64(Int32.max)),
        spaced: Bool = false
    ) async throws -> Answer {
        let signed = LegacySignedRequest(
            productId: productId, deviceName: deviceName, timestamp: timestamp, nonce: nonce)
        var body = signed.body(productSecret: secret)
        if spaced { body.insert(UInt8(ascii: " "), at: 1) }
        return try await send(.POST, RegistrationPath.legacy, headers: LegacySignedRequest.headers, body: body)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}

extension TestServer.Answer {
    /// The v2 error code, or nil on success.
    var errorCode: String? {
        ((json["Response"] as? [String: Any])?["Error"] as? [String: Any])?["Code"] as? String
    }

    /// Decrypts a v2 success into the credential.
    func credential(secret: String) throws -> DeviceCredential {
        guard case .success(let payload, _, _) = try RegistrationReply(decoding: body) else {
            throw TestFailure("expected success, got \(text)")
        }
        return try DeviceCredential(
            decoding: PayloadCipher.decrypt(payload: payload.payload, length: payload.length, productSecret: secret))
    }

    /// A v2 success's `Payload` and `State`.
    var payload: String? { (json["Response"] as? [String: Any])?["Payload"] as? String }
    var state: Int? { (json["Response"] as? [String: Any])?["State"] as? Int }

    var legacyCode: Int? { json["code"] as? Int }

    func legacyCredential(secret: String) throws -> DeviceCredential {
        guard case .success(let payload, _) = try LegacyRegistrationReply(decoding: body) else {
            throw TestFailure("expected success, got \(text)")
        }
        return try DeviceCredential(
            decoding: PayloadCipher.decrypt(payload: payload.payload, length: payload.length, productSecret: secret))
    }
}

extension DeviceCredential {
    var psk: String? {
        if case .key(let psk) = self { return psk }
        return nil
    }
}
