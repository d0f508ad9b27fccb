import AsyncHTTPClient
import DynRegClient
import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import SwiftASN1
import Testing
import X509

/// The SDK against the real server over loopback HTTP.
@Suite("DynRegClient against dynreg serve")
struct LiveServerTests {
    static func registrar(
        _ url: String, _ configure: (inout DeviceRegistrar.Configuration) -> Void = { _ in }
    )
        -> DeviceRegistrar
    {
        var configuration = DeviceRegistrar.Configuration(endpoint: RegistrationEndpoint(string: url)!)
        configuration.retry = RetryPolicy(maxAttempts: 2, baseDelay: .milliseconds(10), maxDelay: .milliseconds(20))
        configuration.timeout = .seconds(5)
        configure(&configuration)
        return DeviceRegistrar(configuration: configuration)
    }

    @Test("key products: both protocols, both algorithms; the psk is what the server stored")
    func keyProducts() async throws {
        try await LiveServer.with { server in
            let product = try await server.createProduct()
            let variants: [(RegistrationProtocol, DynRegProtocol.SignatureAlgorithm)] = [
                (.current, .hmacSHA256), (.current, .hmacSHA1), (.legacy, .hmacSHA1),
            ]
            for (index, (registrationProtocol, algorithm)) in variants.enumerated() {
                let name = "sdk-\(index)"
                let registered = try await Self.registrar(server.baseURL) {
                    $0.registrationProtocol = registrationProtocol
                    $0.algorithm = algorithm
                }.register(productId: product.id, deviceName: name, productSecret: product.secret)
                let psk = try #require(registered.psk)
                let device = try #require(try await server.store.device(productId: product.id, deviceName: name))
                #expect(device.psk == psk)
                #expect(device.status == .registered)
                let mqtt = try #require(try registered.mqttCredentials(expiry: Date().addingTimeInterval(60)))
                #expect(MQTTCredentials.verify(username: mqtt.username, password: mqtt.password, psk: device.psk!))
                #expect(!(registered.requestId ?? "").isEmpty)
            }
        }
    }

    @Test("each error kind from the real server")
    func errorKinds() async throws {
        try await LiveServer.with { server in
            let product = try await server.createProduct(autoCreate: false)
            let registrar = Self.registrar(server.baseURL)
            // The platform's answer.
            await #expect {
                try await registrar.register(
                    productId: product.id, deviceName: "d", productSecret: "wrong-secret-0123456789")
            } throws: { error in
                let error = error as? RegistrationError
                return error?.code == .rejected && error?.platformCode == "AuthFailure.SignatureFailure"
                    && error?.attempts == 1
            }
            await #expect {
                try await registrar.register(productId: product.id, deviceName: "d", productSecret: product.secret)
            } throws: { error in
                (error as? RegistrationError)?.platformCode == "ResourceNotFound.DeviceNotExist"
            }
            await #expect {
                try await Self.registrar(server.baseURL) { $0.registrationProtocol = .legacy }
                    .register(productId: "NOPRODUCT1", deviceName: "d", productSecret: product.secret)
            } throws: { error in
                (error as? RegistrationError)?.platformCode == "ResourceNotFound.ProductNotExist"
            }
            // Invalid input: caught before sending, so no event is recorded.
            await #expect {
                try await registrar.register(
                    productId: product.id, deviceName: "bad name", productSecret: product.secret)
            } throws: { error in
                (error as? RegistrationError)?.code == .invalidInput
            }
            // Not a registration answer: a wrong URL.
            await #expect {
                try await Self.registrar(server.baseURL + "/health/device/register")
                    .register(productId: product.id, deviceName: "d", productSecret: product.secret)
            } throws: { error in
                (error as? RegistrationError)?.code == .undecodableAnswer
            }
            let events = try await server.store.events(productId: product.id, limit: 10)
            #expect(events.map(\.outcome) == ["ResourceNotFound.DeviceNotExist"])
            // The wrong secret proved nothing: counted with the refusals (the admin API writes them out first).
            var request = HTTPClientRequest(url: server.baseURL + "/admin/v1/refusals?product=\(product.id)")
            request.headers.add(name: "Authorization", value: "Bearer \(LiveServer.adminToken)")
            let answer = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await answer.body.collect(upTo: 1 << 16)
            let refusals = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
            let rows = (refusals?["refusals"] as? [[String: Any]]) ?? []
            #expect(rows.map { $0["outcome"] as? String } == [RegistrationErrorCode.signatureFailure.code])
        }
        // Transport: nothing listens on the port any more.
        let closedPort = try await LiveServer.with { $0.port }
        await #expect {
            try await Self.registrar("http://127.0.0.1:\(closedPort)")
                .register(productId: "P1", deviceName: "d", productSecret: "0123456789abcdef")
        } throws: { error in
            let error = error as? RegistrationError
            return error?.code == .transport && error?.attempts == 2
        }
    }

    @Test("registerIfNeeded: one network request across two calls")
    func registerIfNeeded() async throws {
        try await LiveServer.with { server in
            let product = try await server.createProduct()
            let store = FileCredentialStore(fileURL: server.directory.appendingPathComponent("credential.json"))
            let registrar = Self.registrar(server.baseURL)
            let first = try await registrar.registerIfNeeded(
                productId: product.id, deviceName: "d", productSecret: product.secret, store: store)
            let second = try await registrar.registerIfNeeded(
                productId: product.id, deviceName: "d", productSecret: product.secret, store: store)
            #expect(first == second)
            #expect(try await server.store.events(productId: product.id, limit: 10).count == 1)
            #expect(try await server.store.device(productId: product.id, deviceName: "d")?.registrationCount == 1)
        }
    }

    @Test("certificate products: server-made key, and a key made on the device (CSR)")
    func certificates() async throws {
        try await LiveServer.with { server in
            let product = try await server.createProduct(authType: .certificate)
            let serverMade = try await Self.registrar(server.baseURL)
                .register(productId: product.id, deviceName: "cam-1", productSecret: product.secret)
            guard case .certificate(let cert, let key) = serverMade.credential else {
                Issue.record("expected a certificate")
                return
            }
            #expect(key.hasPrefix("-----BEGIN PRIVATE KEY-----"))
            #expect(try Certificate(pemEncoded: cert).subject.description.contains("CN=\(product.id)cam-1"))

            let deviceMade = try await Self.registrar(server.baseURL) { $0.certificateKey = .device }
                .register(productId: product.id, deviceName: "cam-2", productSecret: product.secret)
            guard case .certificate(let cert2, let key2) = deviceMade.credential else {
                Issue.record("expected a certificate")
                return
            }
            let privateKey = try Certificate.PrivateKey(pemEncoded: key2)
            #expect(try Certificate(pemEncoded: cert2).publicKey == privateKey.publicKey)
            let stored = try await server.store.certificates(productId: product.id, deviceName: "cam-2")
            #expect(stored.count == 1)
            // The server kept the certificate, and nothing of the key.
            #expect(stored.first?.pem == cert2)
            // Legacy cannot carry a CSR: refused before sending.
            await #expect {
                try await Self.registrar(server.baseURL) {
                    $0.certificateKey = .device
                    $0.registrationProtocol = .legacy
                }.register(productId: product.id, deviceName: "cam-3", productSecret: product.secret)
            } throws: { error in
                (error as? RegistrationError)?.code == .invalidInput
            }
        }
    }
}
