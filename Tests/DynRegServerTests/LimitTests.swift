import DynRegProtocol
import DynRegServer
import DynRegStore
import DynRegTestSupport
import Foundation
import NIOHTTP1
import Testing

/// Rate limits, the lockout after wrong signatures and the new-device brake, over HTTP against a real server.
/// Clients at different addresses arrive through a trusted proxy (`X-Forwarded-For`), as behind a load balancer.
@Suite("Limits and lockouts")
struct LimitTests {
    static let limited = RegistrationErrorCode.requestLimitExceeded.code

    /// Loopback is the trusted proxy; nothing else is limited unless the test says so.
    static func configure(
        _ change: @escaping @Sendable (inout RegistrationLimits) -> Void
    ) -> (
        inout ServerConfiguration
    ) -> Void {
        { configuration in
            configuration.trustedProxies = [AddressBlock("127.0.0.1")!]
            configuration.limits.perAddress = RegistrationRate(perSecond: 0, burst: 1)
            configuration.limits.perProduct = RegistrationRate(perSecond: 0, burst: 1)
            change(&configuration.limits)
        }
    }

    func scrape(_ server: TestServer) async throws -> [String: Double] {
        let answer = try await server.send(
            .GET, "/metrics", headers: [("Authorization", "Bearer \(TestServer.adminToken)")])
        return MetricsTests.samples(answer.text)
    }

    @Test("an address over its rate gets RequestLimitExceeded in the envelope; another address does not")
    func addressRate() async throws {
        try await TestServer.with(
            configure: Self.configure { $0.perAddress = RegistrationRate(perSecond: 0.001, burst: 3) }
        ) { server in
            let product = try await server.createProduct()
            var codes: [String?] = []
            for index in 0..<5 {
                let answer = try await server.register(
                    productId: product.id, deviceName: "a\(index)", secret: product.secret, forwardedFor: "10.0.0.1")
                #expect(answer.status == 200)
                codes.append(answer.errorCode)
            }
            #expect(codes == [nil, nil, nil, Self.limited, Self.limited])
            let other = try await server.register(
                productId: product.id, deviceName: "b", secret: product.secret, forwardedFor: "10.0.0.2")
            #expect(other.errorCode == nil)
            // The limited address is the forwarded one, in the refusal counts too.
            let refusals = try await server.admin(.GET, "/refusals?product=")
            let rows = try #require(refusals.json["refusals"] as? [[String: Any]])
            #expect(rows.map { $0["remoteAddress"] as? String } == ["10.0.0.1"])
            #expect(rows.first?["count"] as? Int == 2)
            #expect(try await scrape(server)[#"dynreg_refusals_total{reason="address_rate"}"#] == 2)
        }
    }

    @Test("X-Forwarded-For from a peer that is not a trusted proxy is ignored")
    func untrustedForwardedFor() async throws {
        try await TestServer.with(configure: { $0.limits.perAddress = RegistrationRate(perSecond: 0.001, burst: 1) }) {
            server in
            let product = try await server.createProduct()
            let first = try await server.register(
                productId: product.id, deviceName: "a", secret: product.secret, forwardedFor: "10.9.9.9")
            #expect(first.errorCode == nil)
            // Another claimed address does not buy a new bucket: the limit is the peer's.
            let second = try await server.register(
                productId: product.id, deviceName: "b", secret: product.secret, forwardedFor: "10.9.9.8")
            #expect(second.errorCode == Self.limited)
            let events = try await server.admin(.GET, "/products/\(product.id)/events?outcome=Success")
            let addresses = (events.json["events"] as? [[String: Any]])?.compactMap { $0["remoteAddress"] as? String }
            #expect(addresses == ["127.0.0.1"])
        }
    }

    @Test("a product's own rate, set through the admin API, limits it alone")
    func productRate() async throws {
        try await TestServer.with(configure: Self.configure { _ in }) { server in
            let limited = try await server.createProduct(
                #"{"name":"slow","registrationRate":{"perSecond":0.001,"burst":2}}"#)
            let free = try await server.createProduct()
            let shown = try await server.admin(.GET, "/products/\(limited.id)")
            #expect((shown.json["registrationRate"] as? [String: Any])?["burst"] as? Int == 2)
            var codes: [String?] = []
            for index in 0..<3 {
                codes.append(
                    try await server.register(productId: limited.id, deviceName: "d\(index)", secret: limited.secret)
                        .errorCode)
            }
            #expect(codes == [nil, nil, Self.limited])
            #expect(
                try await server.register(productId: free.id, deviceName: "d", secret: free.secret).errorCode == nil)
            // PATCH back to the server's default (none here).
            let patched = try await server.admin(.PATCH, "/products/\(limited.id)", json: #"{"registrationRate":null}"#)
            #expect(patched.status == 200)
            #expect(patched.json["registrationRate"] is NSNull)
            #expect(
                try await server.register(productId: limited.id, deviceName: "d9", secret: limited.secret).errorCode
                    == nil)
            let bad = try await server.admin(.PATCH, "/products/\(free.id)", json: #"{"newDevicesPerHour":0}"#)
            #expect(bad.status == 400 && bad.text.contains("InvalidLimit"), "\(bad.text)")
            // A PATCH refused for another member changes no limit either.
            let mixed = try await server.admin(
                .PATCH, "/products/\(free.id)", json: #"{"newDevicesPerHour":5,"name":""}"#)
            #expect(mixed.status == 400 && mixed.text.contains("InvalidName"), "\(mixed.text)")
            #expect(try await server.admin(.GET, "/products/\(free.id)").json["newDevicesPerHour"] is NSNull)
        }
    }

    @Test("a leaked secret: guesses lock one address out, a burst of new names meets the brake, known devices go on")
    func leakedSecretAttack() async throws {
        try await TestServer.with(
            configure: Self.configure { limits in
                limits.lockout.failures = 5
            }
        ) { server in
            let product = try await server.createProduct(#"{"name":"fleet","newDevicesPerHour":3}"#)
            let other = try await server.createProduct()
            // A known device, registered before the attack.
            #expect(
                try await server.register(
                    productId: product.id, deviceName: "known", secret: product.secret, forwardedFor: "10.1.1.1"
                ).errorCode == nil)

            // One address guesses signatures: after five it is refused, even with the right secret.
            for index in 0..<5 {
                let guess = try await server.register(
                    productId: product.id, deviceName: "g\(index)", secret: "guess-\(index)", forwardedFor: "10.6.6.6")
                #expect(guess.errorCode == RegistrationErrorCode.signatureFailure.code)
            }
            let locked = try await server.register(
                productId: product.id, deviceName: "known", secret: product.secret, forwardedFor: "10.6.6.6")
            #expect(locked.errorCode == Self.limited)
            // Other addresses and other products are not affected.
            #expect(
                try await server.register(
                    productId: other.id, deviceName: "x", secret: other.secret, forwardedFor: "10.6.6.6"
                ).errorCode == nil)
            #expect(
                try await server.register(
                    productId: product.id, deviceName: "known", secret: product.secret, forwardedFor: "10.1.1.1"
                ).errorCode == nil)
            let lockouts = try await server.admin(.GET, "/products/\(product.id)/lockouts")
            let listed = try #require(lockouts.json["lockouts"] as? [[String: Any]])
            #expect(listed.map { $0["remoteAddress"] as? String } == ["10.6.6.6"])
            #expect(listed.first?["failures"] as? Int == 5)

            // A script with the secret registers new names as fast as it can: "known" plus two more, then the brake.
            var codes: [String?] = []
            for index in 0..<5 {
                codes.append(
                    try await server.register(
                        productId: product.id, deviceName: "new\(index)", secret: product.secret,
                        forwardedFor: "10.2.2.\(index)"
                    ).errorCode)
            }
            let quota = RegistrationErrorCode.deviceQuota.code
            #expect(codes == [nil, nil, quota, quota, quota])
            let braked = try await server.register(
                productId: product.id, deviceName: "new9", secret: product.secret, forwardedFor: "10.2.2.9")
            #expect(braked.text.contains("brake"), "\(braked.text)")
            // Known devices still re-register.
            #expect(
                try await server.register(
                    productId: product.id, deviceName: "new0", secret: product.secret, forwardedFor: "10.1.1.1"
                ).errorCode == nil)

            // The audit log has one lockout and one brake event; the metrics show all of it.
            let events = try await server.admin(.GET, "/products/\(product.id)/events?limit=100")
            let outcomes = (events.json["events"] as? [[String: Any]])?.compactMap { $0["outcome"] as? String } ?? []
            #expect(outcomes.filter { $0 == "RequestLimitExceeded.Lockout" }.count == 1, "\(outcomes)")
            #expect(outcomes.filter { $0 == quota }.count == 1, "\(outcomes)")
            let samples = try await scrape(server)
            #expect(samples["dynreg_lockouts_total"] == 1)
            #expect(samples[#"dynreg_refusals_total{reason="locked_out"}"#] == 1)
            #expect(samples[#"dynreg_refusals_total{reason="new_device_brake"}"#] == 4)
            #expect(samples[#"dynreg_registrations_total{endpoint="/device/register",outcome="\#(quota)"}"#] == 4)

            // The operator clears the lockout and lifts the brake.
            let cleared = try await server.admin(.DELETE, "/products/\(product.id)/lockouts/10.6.6.6")
            #expect(cleared.status == 204)
            #expect(try await server.admin(.DELETE, "/products/\(product.id)/lockouts/10.6.6.6").status == 404)
            _ = try await server.admin(.PATCH, "/products/\(product.id)", json: #"{"newDevicesPerHour":null}"#)
            #expect(
                try await server.register(
                    productId: product.id, deviceName: "after", secret: product.secret, forwardedFor: "10.6.6.6"
                ).errorCode == nil)
        }
    }
}

@Suite("Admin actions in the audit log")
struct AdminAuditTests {
    @Test("every change an operator makes is an event naming the token by fingerprint, never the token")
    func adminActionsAreAudited() async throws {
        try await TestServer.with { server in
            let product = try await server.createProduct()
            _ = try await server.admin(.POST, "/products/\(product.id)/devices", json: #"{"deviceName":"gw"}"#)
            _ = try await server.admin(.POST, "/products/\(product.id)/devices/gw/activate")
            _ = try await server.admin(.POST, "/products/\(product.id)/devices/gw/reset")
            _ = try await server.admin(.PATCH, "/products/\(product.id)", json: #"{"autoCreate":false}"#)
            _ = try await server.admin(.POST, "/products/\(product.id)/rotate-secret")
            _ = try await server.admin(.DELETE, "/products/\(product.id)/devices/gw")
            let events = try #require(
                try await server.store.events(productId: product.id, limit: 20) as [RegistrationEvent]?)
            #expect(
                events.map(\.outcome).reversed() == [
                    "Admin.ProductCreated", "Admin.DeviceCreated", "Admin.DeviceActivated", "Admin.DeviceReset",
                    "Admin.ProductUpdated", "Admin.SecretRotated", "Admin.DeviceDeleted",
                ])
            let endpoints = Set(events.map(\.endpoint))
            #expect(endpoints.count == 1)
            let endpoint = try #require(endpoints.first)
            #expect(endpoint.hasPrefix("admin token ") && endpoint.count == "admin token ".count + 8, "\(endpoint)")
            #expect(events.allSatisfy { !"\($0)".contains(TestServer.adminToken) })
            #expect(events.filter { $0.deviceName == "gw" }.count == 4)
        }
    }
}
