import AsyncHTTPClient
import DynRegCA
import DynRegPostgres
import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Synchronization
import Testing

/// Two `dynreg serve` processes on one PostgreSQL database, under concurrent load, one of them killed.
@Suite("Two server instances on PostgreSQL", .serialized)
struct TwoInstanceTests {
    static let adminToken = "two-instance-test-admin-token-0123456789"
    /// Hundreds of registrations at once from one address: more than the default limits let through.
    static let unlimited = ["--address-rate-limit", "0", "--product-rate-limit", "0", "--lockout-failures", "0"]

    enum Outcome: Sendable {
        case issued(psk: String)
        case refused(code: String)
        case transport(String)

        var psk: String? { if case .issued(let psk) = self { psk } else { nil } }
        var code: String? { if case .refused(let code) = self { code } else { nil } }
    }

    typealias Answer = (product: String, device: String, instance: Int, outcome: Outcome, latency: Duration)

    /// Starts both instances on a fresh database (they migrate it together), one configured by flag and one by
    /// environment, and hands them over with a running store on the same database.
    static func withTwoInstances(
        arguments: [String] = unlimited, _ body: (PostgresStore, [ServerProcess], HTTPClient) async throws -> Void
    ) async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            let databaseURL = try PostgresTestDatabase.url(of: configuration)
            // One master key for both instances and the test's own store, as production needs.
            let environment: [String: String?] = [
                "DYNREG_ADMIN_TOKEN": adminToken, "DYNREG_MASTER_KEY": LiveServer.encodedMasterKey,
            ]
            let clock = ContinuousClock()
            let startTime = clock.now
            async let first = outcome {
                try await ServerProcess.start(
                    arguments: ["--no-demo", "--database", databaseURL] + arguments, environment: environment)
            }
            async let second = outcome {
                try await ServerProcess.start(
                    arguments: ["--no-demo"] + arguments,
                    environment: environment.merging(["DYNREG_DATABASE": databaseURL]) { $1 })
            }
            let started = await [first, second]
            let servers = started.compactMap { try? $0.get() }
            func stopAll() async {
                let stopping = clock.now
                await withTaskGroup(of: Void.self) { group in
                    for server in servers { group.addTask { await server.stop() } }
                }
                print("two instances stopped in \(clock.now - stopping)")
            }
            if servers.count < started.count {
                await stopAll()
                for result in started { _ = try result.get() }
            }
            print("two instances listening after \(clock.now - startTime)")

            var httpConfiguration = HTTPClient.Configuration()
            // A connection per request: every registration is in flight at once, none queues in the client.
            httpConfiguration.connectionPool = .init(
                idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: 500)
            httpConfiguration.timeout = .init(connect: .seconds(60), read: .seconds(120))
            let client = HTTPClient(eventLoopGroupProvider: .singleton, configuration: httpConfiguration)
            do {
                let store = PostgresStore(
                    configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
                try await withRunning(store) { try await body(store, servers, client) }
                print("test body done after \(clock.now - startTime)")
            } catch {
                try? await client.shutdown()
                for (index, server) in servers.enumerated() {
                    print("instance \(index + 1) stderr:\n\(server.stderr.suffix(4000))")
                }
                await stopAll()
                throw error
            }
            try? await client.shutdown()
            await stopAll()
        }
    }

    /// The test server's URL with another database; the password never leaves it.
    static func product(_ id: String, quota: Int?) -> Product {
        Product(
            id: id, name: id, authType: .key, secret: "\(id)-secret-0123456789abcdefghij", dynamicRegistration: true,
            autoCreate: true, deviceQuota: quota, allowClocklessDevices: false, deviceCount: 0, createdAt: Date())
    }

    /// One signed `POST /device/register`; the credential decrypted with the product secret.
    static func register(
        _ client: HTTPClient, port: Int, instance: Int, product: Product, device: String, secret: String? = nil,
        forwardedFor: String? = nil
    ) async -> Answer {
        let start = ContinuousClock.now
        let signed = SignedRequest(
            registering: RegistrationRequestBody(productId: product.id, deviceName: device),
            canonicalHost: "127.0.0.1", algorithm: .hmacSHA256, timestamp: Int64(Date().timeIntervalSince1970),
            nonce: Int64.random(in: 1...Int64(Int32.max)))
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(RegistrationPath.current)")
        request.method = .POST
        request.headers.add(contentsOf: signed.headers(productSecret: secret ?? product.secret))
        if let forwardedFor { request.headers.add(name: "X-Forwarded-For", value: forwardedFor) }
        request.body = .bytes(ByteBuffer(bytes: signed.body))
        let outcome: Outcome
        do {
            let response = try await client.execute(request, timeout: .seconds(120))
            let bytes = try await response.body.collect(upTo: 1 << 16)
            if response.status != .ok {
                outcome = .transport("HTTP \(response.status.code)")
            } else {
                switch try RegistrationReply(decoding: Array(buffer: bytes)) {
                case .failure(let code, _, _):
                    outcome = .refused(code: code)
                case .success(let payload, _, _):
                    let plaintext = try PayloadCipher.decrypt(
                        payload: payload.payload, length: payload.length, productSecret: product.secret)
                    guard case .key(let psk) = try DeviceCredential(decoding: plaintext) else {
                        outcome = .transport("not a key credential")
                        break
                    }
                    outcome = .issued(psk: psk)
                }
            }
        } catch {
            outcome = .transport(String(describing: error))
        }
        return (product.id, device, instance, outcome, ContinuousClock.now - start)
    }

    static func summary(_ answers: [Answer], elapsed: Duration) -> String {
        let latencies = answers.map {
            Double($0.latency.components.attoseconds) / 1e15 + Double($0.latency.components.seconds) * 1000
        }
        .sorted()
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]
        }
        let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
        return String(
            format: "%d requests in %.2f s (%.0f/s); latency p50 %.1f ms, p99 %.1f ms, max %.1f ms",
            answers.count, seconds, Double(answers.count) / seconds, percentile(0.5), percentile(0.99),
            latencies.last ?? 0)
    }

    /// Sends `body` with `headers` to one instance and decodes the registration answer.
    static func send(
        _ client: HTTPClient, port: Int, headers: [(String, String)], body: [UInt8]
    ) async throws -> RegistrationReply {
        var request = HTTPClientRequest(url: "http://127.0.0.1:\(port)\(RegistrationPath.current)")
        request.method = .POST
        request.headers.add(contentsOf: headers)
        request.body = .bytes(ByteBuffer(bytes: body))
        let response = try await client.execute(request, timeout: .seconds(60))
        return try RegistrationReply(decoding: Array(buffer: try await response.body.collect(upTo: 1 << 16)))
    }

    @Test("a byte-identical retry on the other instance gets the first answer; a device's own certificate is one")
    func retriesAndDeviceCertificatesAcrossInstances() async throws {
        try await Self.withTwoInstances { store, servers, client in
            let product = try await store.createProduct(Self.product("RETRYKEY01", quota: nil))
            let signed = SignedRequest(
                registering: RegistrationRequestBody(productId: product.id, deviceName: "d1"),
                canonicalHost: "127.0.0.1", algorithm: .hmacSHA256, timestamp: Int64(Date().timeIntervalSince1970),
                nonce: 77)
            let headers = signed.headers(productSecret: product.secret)
            let first = try await Self.send(client, port: servers[0].port, headers: headers, body: signed.body)
            let again = try await Self.send(client, port: servers[1].port, headers: headers, body: signed.body)
            guard case .success(let payload, _, let state) = first, case .success(let repeated, _, _) = again else {
                Issue.record("\(first) then \(again)")
                return
            }
            #expect(repeated == payload)
            #expect(state == RegistrationReply.stateCreated)
            #expect(try await store.device(productId: product.id, deviceName: "d1")?.registrationCount == 1)

            // A certificate the device brings, registered on one instance and again on the other.
            let operatorCA = try ProductCertificateAuthority.create(productId: "OPERATOR", keyType: .p256)
            var owned = Self.product("OWNCERT001", quota: nil)
            owned.authType = .certificate
            owned.certificateAuthority = StoreSamples.authority
            owned.trustedDeviceCAs = [operatorCA.certificatePEM]
            _ = try await store.createProduct(owned)
            let certificate = try operatorCA.issueWithNewKey(commonName: owned.id + "d1", validityDays: 30).certificate
            for (index, server) in servers.enumerated() {
                let request = SignedRequest(
                    registering: RegistrationRequestBody(
                        productId: owned.id, deviceName: "d1", encryptionType: 1, clientCert: certificate.pem),
                    canonicalHost: "127.0.0.1", algorithm: .hmacSHA256,
                    timestamp: Int64(Date().timeIntervalSince1970), nonce: Int64(index + 1))
                let answer = try await Self.send(
                    client, port: server.port, headers: request.headers(productSecret: owned.secret), body: request.body
                )
                guard case .success = answer else {
                    Issue.record("instance \(index): \(answer)")
                    return
                }
            }
            let stored = try await store.certificates(productId: owned.id, deviceName: "d1")
            #expect(stored.map(\.fingerprint) == [certificate.fingerprint])
            #expect(stored.first?.revokedAt == nil)
        }
    }

    @Test("2 × 500 concurrent registrations, shared names, a quota below demand")
    func concurrentLoadOnTwoInstances() async throws {
        try await Self.withTwoInstances { store, servers, client in
            let unlimited = try await store.createProduct(Self.product("UNLIMITED1", quota: nil))
            let limited = try await store.createProduct(Self.product("LIMITED150", quota: 150))
            // Each instance gets 250 names per product; both get the same names.
            let start = ContinuousClock.now
            let answers = await withTaskGroup(of: Answer.self) { group in
                for (instance, server) in servers.enumerated() {
                    for index in 0..<250 {
                        for product in [unlimited, limited] {
                            let device = "\(product.id == unlimited.id ? "u" : "q")-\(index)"
                            group.addTask {
                                await Self.register(
                                    client, port: server.port, instance: instance, product: product, device: device)
                            }
                        }
                    }
                }
                return await group.reduce(into: [Answer]()) { $0.append($1) }
            }
            let elapsed = ContinuousClock.now - start
            print("two instances, shared names: \(Self.summary(answers, elapsed: elapsed))")

            #expect(answers.count == 1000)
            let transport = answers.compactMap { answer -> String? in
                if case .transport(let message) = answer.outcome { message } else { nil }
            }
            #expect(transport.isEmpty, "transport errors: \(transport.prefix(5))")
            let codes = Dictionary(grouping: answers.compactMap(\.outcome.code), by: { $0 }).mapValues(\.count)
            #expect(codes[RegistrationErrorCode.internalError.code] == nil, "codes: \(codes)")

            // Unlimited: every request is a success, every device registered twice.
            let u = answers.filter { $0.product == unlimited.id }
            #expect(u.allSatisfy { $0.outcome.psk != nil }, "codes: \(codes)")
            #expect(try await store.product(id: unlimited.id)?.deviceCount == 250)

            // Limited: exactly the quota of devices, and every refusal is the quota's.
            let q = answers.filter { $0.product == limited.id }
            #expect(q.allSatisfy { $0.outcome.psk != nil || $0.outcome.code == RegistrationErrorCode.deviceQuota.code })
            #expect(try await store.product(id: limited.id)?.deviceCount == 150)
            let storedLimited = try await store.devices(productId: limited.id, status: nil, limit: 1000, after: nil)
            #expect(storedLimited.count == 150)
            #expect(Set(q.filter { $0.outcome.psk != nil }.map(\.device)).count == 150)

            // Every success is a stored credential: the device exists, holds one of the psks it was issued, and
            // counts exactly as many registrations as were acknowledged.
            for product in [unlimited, limited] {
                let successes = Dictionary(
                    grouping: answers.filter { $0.product == product.id && $0.outcome.psk != nil }, by: \.device)
                for (device, issued) in successes {
                    let stored = try #require(try await store.device(productId: product.id, deviceName: device))
                    #expect(stored.status == .registered)
                    #expect(issued.contains { $0.outcome.psk == stored.psk }, "\(product.id)/\(device)")
                    #expect(stored.registrationCount == issued.count, "\(product.id)/\(device)")
                }
            }
            let listed = try await store.devices(productId: unlimited.id, status: .registered, limit: 1000, after: nil)
            #expect(listed.count == 250)
        }
    }

    @Test("wrong signatures add up across instances: three on each of two lock the address out of both")
    func lockoutsAreShared() async throws {
        let arguments = [
            "--address-rate-limit", "0", "--product-rate-limit", "0", "--lockout-failures", "6",
            "--trusted-proxy", "127.0.0.1",
        ]
        try await Self.withTwoInstances(arguments: arguments) { store, servers, client in
            let product = try await store.createProduct(Self.product("PLOCK00001", quota: nil))
            for (instance, server) in servers.enumerated() {
                for index in 0..<3 {
                    let answer = await Self.register(
                        client, port: server.port, instance: instance, product: product, device: "g\(instance)\(index)",
                        secret: "wrong-secret-0123456789", forwardedFor: "10.7.7.7")
                    #expect(answer.outcome.code == RegistrationErrorCode.signatureFailure.code)
                }
            }
            // Neither instance saw six; together they did. Within a few refreshes both refuse the address.
            let deadline = ContinuousClock.now + .seconds(40)
            var codes: [String?] = []
            repeat {
                try await Task.sleep(for: .seconds(1))
                codes = []
                for (instance, server) in servers.enumerated() {
                    let answer = await Self.register(
                        client, port: server.port, instance: instance, product: product, device: "real",
                        forwardedFor: "10.7.7.7")
                    codes.append(answer.outcome.code)
                }
            } while codes != [
                RegistrationErrorCode.requestLimitExceeded.code, RegistrationErrorCode.requestLimitExceeded.code,
            ]
                && ContinuousClock.now < deadline
            #expect(
                codes == [
                    RegistrationErrorCode.requestLimitExceeded.code, RegistrationErrorCode.requestLimitExceeded.code,
                ])
            #expect(
                try await store.lockouts(productId: product.id, endingAfter: Date()).map(\.remoteAddress) == [
                    "10.7.7.7"
                ])
            // Another address registers on both.
            for (instance, server) in servers.enumerated() {
                let answer = await Self.register(
                    client, port: server.port, instance: instance, product: product, device: "other\(instance)",
                    forwardedFor: "10.8.8.8")
                #expect(answer.outcome.psk != nil)
            }
        }
    }

    @Test("SIGKILL of one instance under load loses no acknowledged registration")
    func killingAnInstanceLosesNoAcknowledgedRegistration() async throws {
        try await Self.withTwoInstances { store, servers, client in
            let product = try await store.createProduct(Self.product("KILLTEST01", quota: nil))
            let victim = servers[1]
            let answeredByVictim = Counter()
            let start = ContinuousClock.now
            let (answers, inFlightAtKill) = await withTaskGroup(of: Answer?.self) { group in
                for (instance, server) in servers.enumerated() {
                    for index in 0..<500 {
                        group.addTask {
                            let answer = await Self.register(
                                client, port: server.port, instance: instance, product: product,
                                device: "i\(instance)-\(index)")
                            if instance == 1 { answeredByVictim.increment() }
                            return answer
                        }
                    }
                }
                // Kill once the victim has answered some requests and still has many in flight.
                let killer = Task {
                    let deadline = ContinuousClock.now + .seconds(60)
                    while answeredByVictim.value < 60 && ContinuousClock.now < deadline {
                        try? await Task.sleep(for: .milliseconds(1))
                    }
                    let inFlight = 500 - answeredByVictim.value
                    await victim.kill()
                    return inFlight
                }
                var answers: [Answer] = []
                for await answer in group { if let answer { answers.append(answer) } }
                return (answers, await killer.value)
            }
            let elapsed = ContinuousClock.now - start
            let acknowledged = answers.filter { $0.outcome.psk != nil }
            let victimAcknowledged = acknowledged.filter { $0.instance == 1 }.count
            print(
                "two instances, one killed: \(Self.summary(answers, elapsed: elapsed)); "
                    + "\(acknowledged.count) acknowledged (\(victimAcknowledged) by the killed instance), "
                    + "\(inFlightAtKill) of its requests in flight at the kill")

            #expect(inFlightAtKill > 0)
            // The survivor answered everything it was sent.
            #expect(answers.filter { $0.instance == 0 }.allSatisfy { $0.outcome.psk != nil })
            #expect(answers.allSatisfy { $0.outcome.code != RegistrationErrorCode.internalError.code })
            var lost: [String] = []
            for answer in acknowledged {
                let stored = try await store.device(productId: product.id, deviceName: answer.device)
                if stored?.psk != answer.outcome.psk || stored?.status != .registered { lost.append(answer.device) }
            }
            #expect(lost.isEmpty, "acknowledged but not stored: \(lost.prefix(10))")
            // Unacknowledged ones may have committed (killed after COMMIT, before the answer); counts agree anyway.
            let stored = try await store.devices(productId: product.id, status: nil, limit: 2000, after: nil)
            #expect(stored.count >= acknowledged.count)
            #expect(try await store.product(id: product.id)?.deviceCount == stored.count)
            print("stored \(stored.count) devices for \(acknowledged.count) acknowledged registrations")
        }
    }
}

final class Counter: Sendable {
    private let count = Atomic(0)

    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}

func outcome<T: Sendable>(_ body: () async throws -> T) async -> Result<T, any Error> {
    do {
        return .success(try await body())
    } catch {
        return .failure(error)
    }
}
