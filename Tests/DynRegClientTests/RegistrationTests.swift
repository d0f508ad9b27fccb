import AsyncHTTPClient
import DynRegClient
import DynRegProtocol
import Foundation
import HTTPTypes
import Testing

@Suite("Registration over HTTP")
struct RegistrationTests {
    @Test(
        "a current-protocol request is signed over the host without port and the exact body",
        arguments: [
            SignatureAlgorithm.hmacSHA256, .hmacSHA1,
        ])
    func signedRequest(algorithm: SignatureAlgorithm) async throws {
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            var configuration = fastConfiguration(baseURL)
            configuration.algorithm = algorithm
            let registered = try await DeviceRegistrar(configuration: configuration).registerFixture()

            #expect(registered.credential == .key(psk: Fixture.psk))
            #expect(registered.productId == Fixture.productId)
            #expect(registered.deviceName == Fixture.deviceName)
            #expect(registered.requestId == "request-ok")

            let requests = await log.requests
            try #require(requests.count == 1)
            let request = requests[0]
            #expect(request.path == "/device/register")
            #expect(request.headers["content-type"] == "application/json; charset=utf-8")
            #expect(request.headers["x-tc-algorithm"] == algorithm.name)
            #expect(
                request.body
                    == RegistrationRequestBody(
                        productId: Fixture.productId, deviceName: Fixture.deviceName
                    ).encodedJSON())
            let nonce = try #require(request.headers["x-tc-nonce"].flatMap(DecimalField.parse))
            #expect((0...Int64(Int32.max)).contains(nonce))
            let timestamp = try #require(request.timestamp)
            #expect(abs(timestamp - unixNow()) <= 5)
            // The Host header carries the port; the signature must not.
            #expect(request.authority?.hasPrefix("127.0.0.1:") == true)
            let signed = SignedRequest(
                canonicalHost: "127.0.0.1", algorithm: algorithm, timestamp: request.headers["x-tc-timestamp"]!,
                nonce: request.headers["x-tc-nonce"]!, body: request.body)
            let signature = try #require(request.headers["x-tc-signature"])
            #expect(signature == signed.signature(productSecret: Fixture.productSecret))
            #expect(signed.verify(signature: signature, productSecret: Fixture.productSecret))
        }
    }

    @Test("a legacy request carries its HMAC-SHA1 signature in the JSON body")
    func legacyRequest() async throws {
        try await withScriptedServer({ _, _ in .legacySuccess() }) { baseURL, log in
            let registered = try await DeviceRegistrar(
                configuration: fastConfiguration(baseURL, registrationProtocol: .legacy)
            ).registerFixture()

            #expect(registered.credential == .key(psk: Fixture.psk))
            #expect(registered.requestId == "legacy-ok")
            let requests = await log.requests
            try #require(requests.count == 1)
            #expect(requests[0].path == "/register/dev")
            let body = try LegacyRegistrationRequestBody(decoding: requests[0].body)
            #expect(body.signed.productId == Fixture.productId)
            #expect(body.signed.deviceName == Fixture.deviceName)
            #expect((0...Int64(Int32.max)).contains(body.signed.nonce))
            #expect(abs(body.signed.timestamp - unixNow()) <= 5)
            #expect(body.signed.verify(signature: body.signature, productSecret: Fixture.productSecret))
        }
    }

    @Test("a certificate credential keeps its PEM newlines and slashes")
    func certificateCredential() async throws {
        let certificate = DeviceCredential.certificate(
            clientCert: "-----BEGIN CERTIFICATE-----\nMIIB/zCCAaWgAwIBAgIU+abc/def==\n-----END CERTIFICATE-----\n",
            clientKey: "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49/AgEGCCqGSM49==\n-----END PRIVATE KEY-----\n")
        try await withScriptedServer({ _, _ in .success(certificate) }) { baseURL, _ in
            let registered = try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerFixture()
            #expect(registered.credential == certificate)
            #expect(registered.psk == nil)
            #expect(try registered.mqttCredentials(expiry: Date()) == nil)
        }
    }

    @Test("a caller's HTTP client is used as given")
    func callersHTTPClient() async throws {
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            let registered = try await DeviceRegistrar(configuration: fastConfiguration(baseURL), httpClient: .shared)
                .registerFixture()
            #expect(registered.credential == .key(psk: Fixture.psk))
            #expect(await log.count == 1)
        }
    }

    @Test("a base URL with a path prefix gets the protocol's path appended; a full URL is used as given")
    func endpointPaths() async throws {
        try await withScriptedServer({ _, request in
            request.path.hasSuffix("/register/dev") ? .legacySuccess() : .success()
        }) { baseURL, log in
            let cases: [(String, RegistrationProtocol, String)] = [
                (baseURL + "/iot/", .current, "/iot/device/register"),
                (baseURL + "/iot", .legacy, "/iot/register/dev"),
                (baseURL + "/gateway/device/register", .current, "/gateway/device/register"),
            ]
            for (url, registrationProtocol, _) in cases {
                _ = try await DeviceRegistrar(
                    configuration: fastConfiguration(url, registrationProtocol: registrationProtocol)
                ).registerFixture()
            }
            #expect(await log.requests.map(\.path) == cases.map(\.2))
        }
    }
}

@Suite("Retries")
struct RetryTests {
    @Test("an answer slower than the timeout is abandoned and the request sent again")
    func slowAnswer() async throws {
        try await withScriptedServer({ number, _ in
            number == 1
                ? .delayed(.seconds(6), then: .success(requestId: "too-late")) : .success(requestId: "in-time")
        }) { baseURL, log in
            // Margins for a loaded machine: the late answer comes long after the timeout, the retry well within it.
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL, timeout: .seconds(2)))
            let registered = try await registrar.registerFixture()
            #expect(registered.requestId == "in-time")
            #expect(await log.count >= 2)
        }
    }

    @Test("a dropped connection is retried")
    func droppedConnection() async throws {
        try await withScriptedServer({ number, _ in number == 1 ? .drop : .success() }) { baseURL, log in
            let registered = try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerFixture()
            #expect(registered.credential == .key(psk: Fixture.psk))
            #expect(await log.count == 2)
        }
    }

    @Test("every attempt carries a fresh nonce")
    func freshNonce() async throws {
        try await withScriptedServer({ number, _ in number < 3 ? .failure(.internalError) : .success() }) {
            baseURL, log in
            _ = try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerFixture()
            let nonces = await log.requests.compactMap { $0.headers["x-tc-nonce"] }
            #expect(nonces.count == 3)
            #expect(Set(nonces).count == 3)
        }
    }

    @Test("InternalError is retried until it passes")
    func internalErrorThenSuccess() async throws {
        let failures = 2
        try await withScriptedServer({ number, _ in number <= failures ? .failure(.internalError) : .success() }) {
            baseURL, log in
            let registered = try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerFixture()
            #expect(registered.requestId == "request-ok")
            #expect(await log.count == failures + 1)
        }
    }

    @Test("RequestLimitExceeded is retried up to maxAttempts, then reported")
    func requestLimitExhaustsAttempts() async throws {
        try await withScriptedServer({ _, _ in .failure(.requestLimitExceeded) }) { baseURL, log in
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL, maxAttempts: 3))
            let error = try await #require(throws: RegistrationError.self) {
                try await registrar.registerFixture()
            }
            #expect(error.code == .rejected)
            #expect(error.platformCode == "RequestLimitExceeded")
            #expect(error.isRetryable)
            #expect(error.attempts == 3)
            #expect(await log.count == 3)
        }
    }

    @Test("an HTTP 503 from a proxy is retried")
    func proxyUnavailable() async throws {
        try await withScriptedServer({ number, _ in
            number == 1 ? .reply(Array("<html>busy</html>".utf8), status: .serviceUnavailable) : .success()
        }) { baseURL, log in
            _ = try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerFixture()
            #expect(await log.count == 2)
        }
    }

    @Test("transport failures are reported after maxAttempts")
    func transportFailureReported() async throws {
        try await withScriptedServer({ _, _ in .drop }) { baseURL, log in
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL, maxAttempts: 2))
            let error = try await #require(throws: RegistrationError.self) {
                try await registrar.registerFixture()
            }
            #expect(error.code == .transport)
            #expect(error.underlying != nil)
            #expect(error.attempts == 2)
            #expect(await log.count == 2)
        }
    }

    @Test(
        "signature, product and device errors are never retried",
        arguments: [
            RegistrationErrorCode.signatureFailure, .productNotExist, .deviceNotExist, .deviceAlreadyActivated,
            .dynamicRegistrationDisabled, .deviceQuota, .nonceReused,
        ])
    func notRetried(code: RegistrationErrorCode) async throws {
        try await withScriptedServer({ _, _ in .failure(code, message: "refused", requestId: "req-42") }) {
            baseURL, log in
            let error = try await fixtureRegistrationError(baseURL)
            #expect(error.code == .rejected)
            #expect(error.platformCode == code.code)
            #expect(error.registrationErrorCode == code)
            #expect(error.message == "refused")
            #expect(error.requestId == "req-42")
            #expect(!error.isRetryable)
            #expect(error.attempts == 1)
            #expect(await log.count == 1)
        }
    }

    @Test("AuthFailure.SignatureFailure: one request, and the description has the code but not the secret")
    func signatureFailure() async throws {
        try await withScriptedServer({ _, _ in
            .failure(.signatureFailure, message: "signature mismatch", requestId: "f4da4f1f")
        }) { baseURL, log in
            let error = try await fixtureRegistrationError(baseURL)
            #expect(error.description == "AuthFailure.SignatureFailure: signature mismatch (request id f4da4f1f)")
            #expect(!String(reflecting: error).contains(Fixture.productSecret))
            #expect(await log.count == 1)
        }
    }

    @Test("a legacy numeric code maps to the platform code and is not retried")
    func legacySignatureFailure() async throws {
        try await withScriptedServer({ _, _ in .legacyFailure(.signatureFailure) }) { baseURL, log in
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL, registrationProtocol: .legacy))
            let error = try await #require(throws: RegistrationError.self) {
                try await registrar.registerFixture()
            }
            #expect(error.code == .rejected)
            #expect(error.platformCode == "AuthFailure.SignatureFailure")
            #expect(error.legacyCode == 1010)
            #expect(error.description.hasPrefix("AuthFailure.SignatureFailure (1010): Check signature failed"))
            #expect(await log.count == 1)
        }
    }

    @Test("a legacy code the client does not know is kept as a number")
    func unknownLegacyCode() async throws {
        let answer = Array(#"{"code":4242,"message":"mystery","requestId":"r"}"#.utf8)
        try await withScriptedServer({ _, _ in .reply(answer) }) { baseURL, log in
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL, registrationProtocol: .legacy))
            let error = try await #require(throws: RegistrationError.self) {
                try await registrar.registerFixture()
            }
            #expect(error.platformCode == "4242")
            #expect(error.legacyCode == 4242)
            #expect(!error.isRetryable)
            #expect(await log.count == 1)
        }
    }
}

@Suite("Clock correction")
struct ClockCorrectionTests {
    @Test(
        "AuthFailure.SignatureExpire with a Date header is retried once with the server's time",
        arguments: [
            Int64(3 * 86_400), Int64(-2 * 86_400),
        ])
    func correctedTimestamp(serverAhead: Int64) async throws {
        try await withScriptedServer({ number, _ in
            number == 1
                ? .failure(.signatureExpire, headers: ["Date": httpDate(unixNow() + serverAhead)]) : .success()
        }) { baseURL, log in
            // maxAttempts 1: the correction is an extra attempt, not a retry.
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL, maxAttempts: 1))
            let started = unixNow()
            _ = try await registrar.registerFixture()
            let finished = unixNow()
            let requests = await log.requests
            try #require(requests.count == 2)
            let first = try #require(requests[0].timestamp)
            let second = try #require(requests[1].timestamp)
            // Within the exchange, however long a loaded machine made it, and a second's rounding of the Date header.
            #expect((started - 1...finished + 1).contains(first))
            #expect((started - 1...finished + 1).contains(second - serverAhead))
            let signed = SignedRequest(
                canonicalHost: "127.0.0.1", algorithm: .hmacSHA256, timestamp: String(second),
                nonce: requests[1].headers["x-tc-nonce"]!, body: requests[1].body)
            #expect(
                signed.verify(signature: requests[1].headers["x-tc-signature"]!, productSecret: Fixture.productSecret))
        }
    }

    @Test("the legacy 1011 answer corrects the timestamp in the body")
    func legacyCorrectedTimestamp() async throws {
        let serverAhead: Int64 = 86_400
        try await withScriptedServer({ number, _ in
            number == 1
                ? .legacyFailure(.signatureExpire, headers: ["Date": httpDate(unixNow() + serverAhead)])
                : .legacySuccess()
        }) { baseURL, log in
            _ = try await DeviceRegistrar(
                configuration: fastConfiguration(baseURL, registrationProtocol: .legacy)
            ).registerFixture()
            let requests = await log.requests
            try #require(requests.count == 2)
            let body = try LegacyRegistrationRequestBody(decoding: requests[1].body)
            #expect(abs(body.signed.timestamp - (unixNow() + serverAhead)) <= 5)
            #expect(body.signed.verify(signature: body.signature, productSecret: Fixture.productSecret))
        }
    }

    @Test("the correction happens once: a second SignatureExpire is reported")
    func correctedOnce() async throws {
        try await withScriptedServer({ _, _ in
            .failure(.signatureExpire, headers: ["Date": httpDate(unixNow() + 86_400)])
        }) { baseURL, log in
            let error = try await fixtureRegistrationError(baseURL)
            #expect(error.platformCode == "AuthFailure.SignatureExpire")
            #expect(error.attempts == 2)
            #expect(await log.count == 2)
        }
    }

    @Test("without a Date header, SignatureExpire is reported at once")
    func noDateHeader() async throws {
        try await withScriptedServer({ _, _ in .failure(.signatureExpire) }) { baseURL, log in
            let error = try await fixtureRegistrationError(baseURL)
            #expect(error.platformCode == "AuthFailure.SignatureExpire")
            #expect(await log.count == 1)
        }
    }
}

@Suite("Undecodable answers and invalid input")
struct RefusalTests {
    @Test("a wrong product secret shows as a credential that does not decrypt")
    func wrongProductSecret() async throws {
        try await withScriptedServer({ _, _ in .success(encryptedWith: "an-entirely-different-secret") }) {
            baseURL, log in
            let error = try await fixtureRegistrationError(baseURL)
            #expect(error.code == .undecodableAnswer)
            #expect(error.message == "could not decrypt the credential: is the product secret right?")
            #expect(error.requestId == "request-ok")
            #expect(!error.isRetryable)
            #expect(!error.description.contains(Fixture.productSecret))
            #expect(await log.count == 1)
        }
    }

    @Test("an answer that is not a registration answer is undecodable")
    func notARegistrationAnswer() async throws {
        try await withScriptedServer({ _, _ in .reply(Array("<html>not found</html>".utf8), status: .notFound) }) {
            baseURL, log in
            let error = try await fixtureRegistrationError(baseURL)
            #expect(error.code == .undecodableAnswer)
            #expect(error.httpStatus == 404)
            #expect(error.message.contains("is the URL right?"))
            #expect(await log.count == 1)
        }
    }

    struct InvalidInput: Sendable, CustomTestStringConvertible {
        var productId = Fixture.productId
        var deviceName = Fixture.deviceName
        var productSecret = Fixture.productSecret
        var label: String
        var testDescription: String { label }
    }

    @Test(
        "invalid input is refused before anything is sent",
        arguments: [
            InvalidInput(deviceName: "", label: "empty device name"),
            InvalidInput(deviceName: "has space", label: "device name with a space"),
            InvalidInput(deviceName: String(repeating: "a", count: 49), label: "device name of 49 characters"),
            InvalidInput(productId: "", label: "empty product id"),
            InvalidInput(productId: "ASJ/1234", label: "product id with a slash"),
            InvalidInput(productSecret: "fifteen-chars!!", label: "product secret of 15 characters"),
            InvalidInput(productSecret: "", label: "empty product secret"),
        ])
    func invalidInput(_ input: InvalidInput) async throws {
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL))
            let error = try await #require(throws: RegistrationError.self) {
                try await registrar.register(
                    productId: input.productId, deviceName: input.deviceName, productSecret: input.productSecret)
            }
            #expect(error.code == .invalidInput)
            #expect(error.attempts == 0)
            if !input.productSecret.isEmpty {
                #expect(!error.description.contains(input.productSecret))
            }
            #expect(await log.count == 0)
        }
    }

    @Test("an endpoint that is not http or https, and trust roots that are not PEM, are refused before sending")
    func invalidConfiguration() async throws {
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            var badTrustRoots = fastConfiguration(baseURL)
            badTrustRoots.trustRootsPEM = "not a certificate"
            let configurations = [
                DeviceRegistrar.Configuration(endpoint: RegistrationEndpoint(url: URL(string: "ftp://127.0.0.1/")!)),
                badTrustRoots,
            ]
            for configuration in configurations {
                let error = try await #require(throws: RegistrationError.self) {
                    try await DeviceRegistrar(configuration: configuration).registerFixture()
                }
                #expect(error.code == .invalidInput)
            }
            #expect(await log.count == 0)
        }
    }
}

@Suite("Endpoints")
struct EndpointTests {
    @Test("the protocol's path is appended to a base URL")
    func registrationURLs() {
        let base = RegistrationEndpoint(string: "https://iot.example.com:8443")!
        #expect(base.url(for: .current).absoluteString == "https://iot.example.com:8443/device/register")
        #expect(base.url(for: .legacy).absoluteString == "https://iot.example.com:8443/register/dev")
        let full = RegistrationEndpoint(string: "https://iot.example.com/register/dev")!
        #expect(full.url(for: .current).absoluteString == "https://iot.example.com/register/dev")
        #expect(
            RegistrationEndpoint.tencentGuangzhou.url(for: .current).absoluteString
                == "https://ap-guangzhou.gateway.tencentdevices.com/device/register")
        #expect(RegistrationEndpoint(string: "ftp://iot.example.com") == nil)
        #expect(RegistrationEndpoint(string: "iot.example.com") == nil)
    }
}
