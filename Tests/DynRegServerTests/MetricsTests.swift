import DynRegProtocol
import DynRegServer
import DynRegTestSupport
import Foundation
import NIOHTTP1
import Testing

/// `GET /metrics` after known traffic, read the way Prometheus reads it.
@Suite("Metrics")
struct MetricsTests {
    static let metricsToken = "test-metrics-token-0123456789abcdef"

    /// Each sample line of the text format: the series (name and labels, as written) and its value.
    static func samples(_ text: String) -> [String: Double] {
        var samples: [String: Double] = [:]
        for line in text.split(separator: "\n") where !line.hasPrefix("#") {
            guard let space = line.lastIndex(of: " "), let value = Double(line[line.index(after: space)...]) else {
                continue
            }
            samples[String(line[..<space])] = value
        }
        return samples
    }

    func scrape(_ server: TestServer, token: String = metricsToken) async throws -> [String: Double] {
        let answer = try await server.send(.GET, "/metrics", headers: [("Authorization", "Bearer \(token)")])
        #expect(answer.status == 200, "\(answer.text)")
        #expect(answer.headers.first(name: "Content-Type")?.hasPrefix("text/plain; version=0.0.4") == true)
        return Self.samples(answer.text)
    }

    @Test("registrations, broker answers, refusals and devices are counted exactly")
    func countsAfterKnownTraffic() async throws {
        try await TestServer.with(configure: { $0.metricsToken = Self.metricsToken }) { server in
            let product = try await server.createProduct()
            var psks: [String] = []
            for name in ["m1", "m2", "m3"] { psks.append(try await server.registeredPSK(product, deviceName: name)) }
            // m3 again: a re-registration, and its first psk stops working.
            psks[2] = try await server.registeredPSK(product, deviceName: "m3")
            for _ in 0..<2 {
                let refused = try await server.registerLegacy(productId: product.id, deviceName: "m4", secret: "wrong")
                #expect(refused.legacyCode != 0)
            }
            let unknown = try await server.register(productId: "NOSUCHPROD", deviceName: "x", secret: "s")
            #expect(unknown.errorCode == RegistrationErrorCode.productNotExist.code)

            // Broker: one login let in (activating m1), one wrong password, one wrong broker token.
            let expiry = Int64(Date().timeIntervalSince1970) + 3600
            let login = try MQTTCredentials.derive(
                productId: product.id, deviceName: "m1", psk: psks[0], expiry: expiry)
            func auth(
                password: String, headers: [(String, String)] = TestServer.brokerAuthorization
            ) async throws
                -> TestServer.Answer
            {
                let body = try BrokerTests.json([
                    "clientid": login.clientId, "username": login.username, "password": password,
                ])
                return try await server.send(.POST, "/device/auth", headers: headers, body: body)
            }
            #expect(try await auth(password: login.password).json["result"] as? String == "allow")
            #expect(try await auth(password: "wrong").json["result"] as? String == "deny")
            #expect(try await auth(password: login.password, headers: [("Authorization", "Bearer no")]).status == 401)

            // Tokens: none and a wrong one are refused; the metrics token reads metrics and nothing else.
            #expect(try await server.send(.GET, "/metrics").status == 401)
            #expect(try await server.send(.GET, "/metrics", headers: [("Authorization", "Bearer no")]).status == 401)
            #expect(try await server.admin(.GET, "/products", token: Self.metricsToken).status == 401)

            let samples = try await scrape(server)
            let current = #"endpoint="/device/register""#
            let legacy = #"endpoint="/register/dev""#
            #expect(samples[#"dynreg_registrations_total{\#(current),outcome="Success"}"#] == 4)
            let signature = RegistrationErrorCode.signatureFailure.code
            #expect(samples[#"dynreg_registrations_total{\#(legacy),outcome="\#(signature)"}"#] == 2)
            let notExist = RegistrationErrorCode.productNotExist.code
            #expect(samples[#"dynreg_registrations_total{\#(current),outcome="\#(notExist)"}"#] == 1)
            #expect(samples[#"dynreg_registration_duration_seconds_count{\#(current)}"#] == 5)
            #expect(samples[#"dynreg_registration_duration_seconds_count{\#(legacy)}"#] == 2)
            #expect(samples["dynreg_reregistrations_total"] == 1)
            #expect(samples[#"dynreg_broker_answers_total{endpoint="/device/auth",result="allow"}"#] == 1)
            #expect(samples[#"dynreg_broker_answers_total{endpoint="/device/auth",result="deny"}"#] == 1)
            #expect(samples[#"dynreg_refusals_total{reason="broker_token"}"#] == 1)
            // Two wrong tokens on /metrics, the metrics token on the admin API.
            #expect(samples[#"dynreg_refusals_total{reason="admin_token"}"#] == 3)
            #expect(samples[#"dynreg_devices{status="registered"}"#] == 2)
            #expect(samples[#"dynreg_devices{status="activated"}"#] == 1)
            #expect(samples[#"dynreg_devices{status="created"}"#] == 0)
            #expect(samples[#"dynreg_build_info{version="\#(dynregVersion)"}"#] == 1)
            // At least the four registrations went through the group committer, in however many batches.
            let committed = try #require(samples["dynreg_store_commit_batch_size_sum"])
            #expect(committed >= 4)
            #expect(try #require(samples["dynreg_store_commit_duration_seconds_count"]) >= 1)
            #expect(samples.keys.allSatisfy { !$0.contains("m1") && !$0.contains(product.id) })

            // The admin token reads them too.
            #expect(try await scrape(server, token: TestServer.adminToken)["dynreg_reregistrations_total"] == 1)
        }
    }
}
