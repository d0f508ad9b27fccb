public import AsyncHTTPClient
import Crypto
public import DynRegProtocol
import Foundation
import NIOCore
import NIOHTTP1
import NIOSSL
import SwiftASN1
import X509

/// Registers a device with a dynamic-registration server and returns the credential the server issues.
///
/// Speaks the wire protocol of Tencent Cloud IoT dynamic registration, so it works against the public Tencent
/// gateways as well as a self-hosted `dynreg serve`:
///
/// ```swift
/// let registrar = DeviceRegistrar(endpoint: RegistrationEndpoint(string: "https://iot.example.com:8443")!)
/// let registered = try await registrar.register(
///     productId: "ASJ1234GX", deviceName: "860000000000001", productSecret: productSecret)
/// ```
///
/// Every request is signed with the product secret and carries a fresh timestamp and nonce. Transport failures,
/// `InternalError` and `RequestLimitExceeded` are retried with exponential backoff and jitter (see ``RetryPolicy``);
/// an `AuthFailure.SignatureExpire` answer with a `Date` header is retried once with the timestamp corrected by the
/// server's clock, for devices without a real-time clock. Every failure is a ``RegistrationError``.
public struct DeviceRegistrar: Sendable {
    /// How a registrar reaches the server.
    public struct Configuration: Sendable {
        /// Where requests go. No default: use a preset such as ``RegistrationEndpoint/tencentGuangzhou`` or the
        /// URL of your own server.
        public var endpoint: RegistrationEndpoint
        /// Which endpoint and message format to use. Default ``RegistrationProtocol/current``.
        public var registrationProtocol: RegistrationProtocol
        /// The HMAC that signs ``RegistrationProtocol/current`` requests. Default `hmacsha256`.
        /// ``RegistrationProtocol/legacy`` requests are always signed with HMAC-SHA1.
        public var algorithm: DynRegProtocol.SignatureAlgorithm
        /// How long one attempt may take, from connecting to the last byte of the answer. Default 10 s.
        public var timeout: Duration
        /// When to retry. Default ``RetryPolicy/init(maxAttempts:baseDelay:maxDelay:)``: 4 attempts from 500 ms.
        public var retry: RetryPolicy
        /// PEM certificates of the certificate authorities trusted for HTTPS, replacing the system's trust roots.
        /// Set it for a server whose certificate a private CA issued. Default `nil`: the system's trust roots.
        public var trustRootsPEM: String?
        /// Whether an `AuthFailure.SignatureExpire` answer carrying a `Date` header is retried once with the
        /// server's time. Default `true`.
        public var correctsClockSkew: Bool
        /// Where the private key of a certificate credential is made. Default ``CertificateKeyOrigin/server``,
        /// what every Tencent SDK expects; ``CertificateKeyOrigin/device`` keeps the key on the device
        /// (a dynreg extension, current protocol only).
        public var certificateKey: CertificateKeyOrigin = .server

        /// A configuration with the documented defaults for everything but the endpoint.
        public init(
            endpoint: RegistrationEndpoint,
            registrationProtocol: RegistrationProtocol = .current,
            algorithm: DynRegProtocol.SignatureAlgorithm = .hmacSHA256,
            timeout: Duration = .seconds(10),
            retry: RetryPolicy = RetryPolicy(),
            trustRootsPEM: String? = nil,
            correctsClockSkew: Bool = true
        ) {
            self.endpoint = endpoint
            self.registrationProtocol = registrationProtocol
            self.algorithm = algorithm
            self.timeout = timeout
            self.retry = retry
            self.trustRootsPEM = trustRootsPEM
            self.correctsClockSkew = correctsClockSkew
        }
    }

    /// The configuration the registrar was made with.
    public let configuration: Configuration
    private let httpClient: HTTPClient?

    /// A registrar with the given configuration.
    ///
    /// - Parameters:
    ///   - configuration: Where and how to register.
    ///   - httpClient: The client that sends requests, which you shut down; trust roots from the
    ///   configuration apply to each request. By default each registration uses a client of its own, shut down when
    ///   the registration ends, that does not follow redirects and reports a failed connection at once instead of
    ///   retrying it until the timeout, so that the ``RetryPolicy`` alone decides when to try again.
    public init(configuration: Configuration, httpClient: HTTPClient? = nil) {
        self.configuration = configuration
        self.httpClient = httpClient
    }

    /// A registrar for an endpoint with the default configuration.
    ///
    /// - Parameters:
    ///   - endpoint: Where to register.
    ///   - httpClient: See ``init(configuration:httpClient:)``.
    public init(endpoint: RegistrationEndpoint, httpClient: HTTPClient? = nil) {
        self.init(configuration: Configuration(endpoint: endpoint), httpClient: httpClient)
    }

    /// Registers a device and returns the credential the server issued.
    ///
    /// Input is checked before anything is sent: the device name must be 1–48 characters of
    /// `A–Z a–z 0–9 _ - . : @`, the product secret at least 16 characters.
    ///
    /// - Parameters:
    ///   - productId: The product the device belongs to.
    ///   - deviceName: The device's name, often its IMEI or MAC address.
    ///   - productSecret: The product's secret; it signs the request and decrypts the answer, and never leaves
    ///     the device.
    /// - Returns: The credential with the server's request id.
    /// - Throws: ``RegistrationError``; `CancellationError` when the task is cancelled.
    public func register(
        productId: String, deviceName: String, productSecret: String
    ) async throws
        -> RegisteredCredential
    {
        let plan = try prepare(productId: productId, deviceName: deviceName, productSecret: productSecret)
        if let httpClient {
            return try await register(plan, using: httpClient)
        }
        var clientConfiguration = HTTPClient.Configuration()
        clientConfiguration.tlsConfiguration = plan.tlsConfiguration
        clientConfiguration.redirectConfiguration = .disallow
        clientConfiguration.connectionPool.retryConnectionEstablishment = false
        let client = HTTPClient(eventLoopGroup: HTTPClient.defaultEventLoopGroup, configuration: clientConfiguration)
        let result: Result<RegisteredCredential, any Error>
        do {
            result = .success(try await register(plan, using: client))
        } catch {
            result = .failure(error)
        }
        try? await client.shutdown()
        return try result.get()
    }

    private func register(_ plan: Plan, using httpClient: HTTPClient) async throws -> RegisteredCredential {
        var generator = SystemRandomNumberGenerator()
        var clockOffset: Int64 = 0
        var correctedClock = false
        var attempts = 0
        var retries = 0
        while true {
            try Task.checkCancellation()
            attempts += 1
            switch await attempt(plan, clockOffset: clockOffset, using: httpClient, generator: &generator) {
            case .registered(let credential):
                return credential
            case .failed(var error, let serverClockOffset):
                try Task.checkCancellation()
                if error.isSignatureExpired, configuration.correctsClockSkew, !correctedClock,
                    let serverClockOffset
                {
                    correctedClock = true
                    clockOffset = serverClockOffset
                    continue
                }
                // The clock correction is an extra attempt, outside the retry budget.
                let budget = max(1, configuration.retry.maxAttempts) + (correctedClock ? 1 : 0)
                if error.isRetryable, attempts < budget {
                    retries += 1
                    try await Task.sleep(for: configuration.retry.delay(beforeRetry: retries, using: &generator))
                    continue
                }
                error.attempts = attempts
                throw error
            }
        }
    }

    /// Returns the device's stored credential, or registers the device and stores its credential.
    ///
    /// When the store holds a credential for this product and device, no request is sent. Two concurrent calls
    /// for the same device may both register; call it once, at start-up.
    ///
    /// - Throws: ``RegistrationError``; failures of the store have code ``RegistrationError/Code/credentialStore``.
    public func registerIfNeeded(
        productId: String, deviceName: String, productSecret: String, store: some CredentialStore
    ) async throws -> RegisteredCredential {
        let stored: RegisteredCredential?
        do {
            stored = try await store.credential(productId: productId, deviceName: deviceName)
        } catch {
            throw Self.storeError(error, "could not read the stored credential")
        }
        if let stored { return stored }
        let registered = try await register(
            productId: productId, deviceName: deviceName, productSecret: productSecret)
        do {
            try await store.save(registered)
        } catch {
            // Not fatal for the device: until it connects it may register again.
            throw Self.storeError(error, "registered, but could not save the credential")
        }
        return registered
    }

    private static func storeError(_ error: any Error, _ message: String) -> RegistrationError {
        if let error = error as? RegistrationError { return error }
        // The store's own description is not quoted: it could contain what it was storing.
        return RegistrationError(.credentialStore, message, underlying: error)
    }

    // MARK: - One request

    /// What does not change between attempts.
    private struct Plan: Sendable {
        var url: URL
        var canonicalHost: String
        var tlsConfiguration: TLSConfiguration?
        var timeout: TimeAmount
        var productId: String
        var deviceName: String
        var productSecret: String
        /// With ``CertificateKeyOrigin/device``: the request and the key that stays here.
        var csr: String?
        var deviceKeyPEM: String?
    }

    private func prepare(
        productId: String, deviceName: String, productSecret: String
    ) throws(RegistrationError)
        -> Plan
    {
        guard ProductIdRules.isValid(productId) else {
            throw RegistrationError(
                .invalidInput, "product id \"\(productId)\" must be 1-32 characters of A-Z a-z 0-9 _ -")
        }
        guard DeviceNameRules.isValid(deviceName) else {
            throw RegistrationError(
                .invalidInput, "device name \"\(deviceName)\" must be 1-48 characters of A-Z a-z 0-9 _ - . : @")
        }
        guard ProductSecretRules.isValid(productSecret) else {
            throw RegistrationError(
                .invalidInput,
                "the product secret must be at least \(ProductSecretRules.minimumLength) characters")
        }
        let endpoint = configuration.endpoint
        guard RegistrationEndpoint.isUsable(endpoint.url), let host = endpoint.canonicalHost else {
            throw RegistrationError(
                .invalidInput, "the endpoint must be an http or https URL with a host, not \(endpoint.url)")
        }
        guard configuration.timeout > .zero else {
            throw RegistrationError(.invalidInput, "the timeout must be longer than zero")
        }
        var tlsConfiguration: TLSConfiguration?
        if let pem = configuration.trustRootsPEM {
            let certificates = try? NIOSSLCertificate.fromPEMBytes(Array(pem.utf8))
            guard let certificates, !certificates.isEmpty else {
                throw RegistrationError(.invalidInput, "the trust roots are not PEM certificates")
            }
            var tls = TLSConfiguration.makeClientConfiguration()
            tls.trustRoots = .certificates(certificates)
            tlsConfiguration = tls
        }
        var csr: String?
        var deviceKeyPEM: String?
        if configuration.certificateKey == .device {
            guard !isLegacy else {
                throw RegistrationError(.invalidInput, "a key made on the device needs the current protocol")
            }
            let key = P256.Signing.PrivateKey()
            do {
                let request = try CertificateSigningRequest(
                    version: .v1, subject: try DistinguishedName { CommonName(productId + deviceName) },
                    privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
                    signatureAlgorithm: .ecdsaWithSHA256)
                csr = try request.serializeAsPEM().pemString
            } catch {
                throw RegistrationError(.invalidInput, "could not make a certificate signing request")
            }
            deviceKeyPEM = key.pemRepresentation
        }
        let timeout = configuration.timeout.components
        return Plan(
            url: endpoint.url(for: configuration.registrationProtocol),
            canonicalHost: host,
            tlsConfiguration: tlsConfiguration,
            timeout: .nanoseconds(timeout.seconds * 1_000_000_000 + timeout.attoseconds / 1_000_000_000),
            productId: productId, deviceName: deviceName, productSecret: productSecret, csr: csr,
            deviceKeyPEM: deviceKeyPEM)
    }

    private enum Outcome {
        case registered(RegisteredCredential)
        /// `serverClockOffset`: the server's `Date` minus local time, in seconds, when the answer had one.
        case failed(RegistrationError, serverClockOffset: Int64?)
    }

    /// Credentials are a few kilobytes; anything much larger is not a registration answer.
    private static let maximumAnswerSize = 1 << 20

    private var isLegacy: Bool { configuration.registrationProtocol == .legacy }

    private func attempt(
        _ plan: Plan, clockOffset: Int64, using httpClient: HTTPClient, generator: inout SystemRandomNumberGenerator
    ) async -> Outcome {
        let timestamp = Self.unixTime() + clockOffset
        let nonce = Int64.random(in: 0...Int64(Int32.max), using: &generator)
        var request = HTTPClientRequest(url: plan.url.absoluteString)
        request.method = .POST
        request.tlsConfiguration = plan.tlsConfiguration
        let body: [UInt8]
        if isLegacy {
            let signed = LegacySignedRequest(
                productId: plan.productId, deviceName: plan.deviceName, timestamp: timestamp, nonce: nonce)
            body = signed.body(productSecret: plan.productSecret)
            // What the embedded C SDK sends, so gateways that serve it serve us.
            request.headers.add(contentsOf: LegacySignedRequest.headers)
        } else {
            let signed = SignedRequest(
                registering: RegistrationRequestBody(
                    productId: plan.productId, deviceName: plan.deviceName, csr: plan.csr),
                canonicalHost: plan.canonicalHost, algorithm: configuration.algorithm, timestamp: timestamp,
                nonce: nonce)
            body = signed.body
            request.headers.add(contentsOf: signed.headers(productSecret: plan.productSecret))
        }
        request.body = .bytes(ByteBuffer(bytes: body))

        let status: Int
        let answer: [UInt8]
        let serverTime: Int64?
        do {
            let response = try await httpClient.execute(request, timeout: plan.timeout)
            status = Int(response.status.code)
            serverTime = response.headers.first(name: "Date").flatMap(HTTPDate.unixTime)
            var buffer = try await response.body.collect(upTo: Self.maximumAnswerSize)
            answer = buffer.readBytes(length: buffer.readableBytes) ?? []
        } catch is NIOTooManyBytesError {
            return .failed(
                RegistrationError(.undecodableAnswer, "the answer is larger than a registration answer can be"),
                serverClockOffset: nil)
        } catch {
            return .failed(
                RegistrationError(.transport, describeTransportFailure(error), underlying: error),
                serverClockOffset: nil)
        }
        let serverClockOffset = serverTime.map { $0 - Self.unixTime() }
        switch decode(answer, status: status, plan: plan) {
        case .success(let credential):
            return .registered(credential)
        case .failure(let error):
            return .failed(error, serverClockOffset: serverClockOffset)
        }
    }

    private static func unixTime() -> Int64 {
        Int64(Date().timeIntervalSince1970.rounded(.down))
    }

    private func describeTransportFailure(_ error: any Error) -> String {
        if let error = error as? HTTPClientError {
            if error == .deadlineExceeded { return "no answer within \(configuration.timeout)" }
            if error == .remoteConnectionClosed { return "the server closed the connection without answering" }
        }
        if let error = error as? IOError {
            return String(cString: strerror(error.errnoCode))
        }
        if error is NIOSSLError || error is BoringSSLError {
            // BoringSSL's text is a dump of its error queue; the verification failure is what matters.
            if String(describing: error).contains("CERTIFICATE_VERIFY_FAILED") {
                return "the server's certificate is not trusted; "
                    + "for a private CA, configure its certificate as a trust root"
            }
            return "the TLS handshake failed"
        }
        return String(describing: error)
    }

    // MARK: - The answer

    private func decode(_ answer: [UInt8], status: Int, plan: Plan) -> Result<RegisteredCredential, RegistrationError> {
        let reply: Result<(payload: EncryptedPayload, requestId: String), RegistrationError>
        do {
            reply = try Self.unpack(answer, legacy: isLegacy, status: status)
        } catch {
            return .failure(notARegistrationAnswer(status: status, reason: error.reason))
        }
        return reply.flatMap { decrypt($0.payload, requestId: $0.requestId, status: status, plan: plan) }
    }

    /// Either envelope: a refusal becomes the platform's error, a success its payload.
    private static func unpack(
        _ answer: [UInt8], legacy: Bool, status: Int
    ) throws(ProtocolDecodingError) -> Result<(payload: EncryptedPayload, requestId: String), RegistrationError> {
        guard legacy else {
            switch try RegistrationReply(decoding: answer) {
            case .success(let payload, let id, _): return .success((payload, id))
            case .failure(let code, let message, let id):
                return .failure(
                    RegistrationError(.rejected, message, platformCode: code, requestId: id, httpStatus: status))
            }
        }
        switch try LegacyRegistrationReply(decoding: answer) {
        case .success(let payload, let id): return .success((payload, id))
        case .failure(let code, let message, let id):
            return .failure(
                RegistrationError(
                    .rejected, message, platformCode: RegistrationErrorCode.forLegacyCode(code)?.code ?? String(code),
                    legacyCode: code, requestId: id, httpStatus: status))
        }
    }

    private func notARegistrationAnswer(status: Int, reason: String) -> RegistrationError {
        // Proxies answer 502, 503, 504 and 429 while the server restarts or sheds load: worth another try.
        if status >= 500 || status == 429 {
            return RegistrationError(
                .transport, "the server answered HTTP \(status) without a registration answer", httpStatus: status)
        }
        if status != 200 {
            return RegistrationError(
                .undecodableAnswer,
                "the server answered HTTP \(status) without a registration answer: is the URL right?",
                httpStatus: status)
        }
        return RegistrationError(
            .undecodableAnswer, "the answer is not a registration answer: \(reason)", httpStatus: status)
    }

    private func decrypt(
        _ payload: EncryptedPayload, requestId: String, status: Int, plan: Plan
    )
        -> Result<RegisteredCredential, RegistrationError>
    {
        let plaintext: [UInt8]
        do {
            plaintext = try PayloadCipher.decrypt(
                payload: payload.payload, length: payload.length, productSecret: plan.productSecret)
        } catch {
            let message: String
            switch error {
            case .notBase64, .notBlockAligned, .invalidLength:
                message = "the answer's payload is malformed: \(error.description)"
            default:
                message = Self.wrongSecretMessage
            }
            return .failure(
                RegistrationError(.undecodableAnswer, message, requestId: requestId, httpStatus: status))
        }
        do {
            var credential = try DeviceCredential(decoding: plaintext)
            if let keyPEM = plan.deviceKeyPEM, case .certificate(let certificate, _) = credential {
                // The server certified our key: make sure of it before pairing them.
                guard let parsed = try? Certificate(pemEncoded: certificate),
                    let key = try? P256.Signing.PrivateKey(pemRepresentation: keyPEM),
                    parsed.publicKey == Certificate.PublicKey(key.publicKey)
                else {
                    return .failure(
                        RegistrationError(
                            .undecodableAnswer, "the certificate in the answer is not for the key this device made",
                            requestId: requestId, httpStatus: status))
                }
                credential = .certificate(clientCert: certificate, clientKey: keyPEM)
            }
            return .success(
                RegisteredCredential(
                    productId: plan.productId, deviceName: plan.deviceName, credential: credential,
                    requestId: requestId))
        } catch {
            // A wrong key decrypts to noise; JSON means the key was right and the content is at fault.
            let isJSON = (try? JSONSerialization.jsonObject(with: Data(plaintext))) is [String: Any]
            let message = isJSON ? "the credential is not understood: \(error.reason)" : Self.wrongSecretMessage
            return .failure(
                RegistrationError(.undecodableAnswer, message, requestId: requestId, httpStatus: status))
        }
    }

    private static let wrongSecretMessage = "could not decrypt the credential: is the product secret right?"
}

/// Where the private key of a certificate credential is made.
public enum CertificateKeyOrigin: Sendable, Hashable {
    /// The server makes the key and sends it with the certificate, as the protocol defines.
    case server
    /// The device makes a P-256 key and sends a certificate signing request; the key never leaves the device.
    /// Needs a dynreg server and the current protocol. Key-authentication products ignore the request.
    case device
}
