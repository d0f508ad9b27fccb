import DynRegCA
import DynRegProtocol
import DynRegServer
import DynRegStore
import Foundation
import NIOHTTP1
import Testing

/// The console's product page over real HTTP: limits, the new-device brake, topic rules and trusted CAs edited
/// through the form and read back through the admin API; refused input shown with the form as sent and nothing
/// changed; lockouts listed and cleared; every change in the audit log as the admin API writes it.
@Suite("Console product editing")
struct ConsoleProductTests {
    /// The settings form as the page sends it, with `changes` over the product's current fields.
    static func settings(_ page: String, _ changes: [String: String]) -> [(String, String)] {
        var fields: [(String, String)] = []
        for name in ["name", "deviceQuota", "ratePerSecond", "rateBurst", "newDevicesPerHour"] {
            fields.append((name, changes[name] ?? ConsoleClient.field(name, in: page) ?? ""))
        }
        for name in ["topicRules", "trustedCAs"] {
            if let value = changes[name] ?? ConsoleClient.textarea(name, in: page) { fields.append((name, value)) }
        }
        for name in ["dynamicRegistration", "autoCreate", "includeDefaultTopics"] where changes[name] != "off" {
            fields.append((name, "on"))
        }
        return fields
    }

    static func product(_ server: TestServer, _ id: String) async throws -> [String: Any] {
        try await server.admin(.GET, "/products/\(id)").json
    }

    static func canonical(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]), as: UTF8.self)
    }

    static func outcomes(_ server: TestServer, _ id: String) async throws -> [[String: Any]] {
        try await server.admin(.GET, "/products/\(id)/events?limit=100").json["events"] as? [[String: Any]] ?? []
    }

    @Test("rate limit, brake, quota and topic rules saved from the form are what the admin API reads, and audited")
    func editLimitsAndTopics() async throws {
        try await TestServer.with { server in
            let console = try await ConsoleClient.signedIn(server)
            let (id, _) = try await server.createProduct()
            let path = "/console/products/\(id)"
            let before = try await console.get(path)
            #expect(before.status == 200)
            #expect(ConsoleClient.field("ratePerSecond", in: before.text) == "")
            #expect(ConsoleClient.textarea("trustedCAs", in: before.text) == nil)  // key product
            let saved = try await console.post(
                path,
                Self.settings(
                    before.text,
                    [
                        "ratePerSecond": "2.5", "rateBurst": "40", "newDevicesPerHour": "300", "deviceQuota": "77",
                        "topicRules":
                            "publish ${productId}/${deviceName}/up\r\nsubscribe fleet/+/down\r\n\r\nall $thing/x/#",
                        "includeDefaultTopics": "off",
                    ]))
            #expect(saved.status == 303, "\(saved.text)")
            let product = try await Self.product(server, id)
            let rate = try #require(product["registrationRate"] as? [String: Any])
            #expect(rate["perSecond"] as? Double == 2.5 && rate["burst"] as? Int == 40)
            #expect(product["newDevicesPerHour"] as? Int == 300)
            #expect(product["deviceQuota"] as? Int == 77)
            let topics = try #require(product["topicRules"] as? [String: Any])
            #expect(topics["includeDefaults"] as? Bool == false)
            let rules = (topics["rules"] as? [[String: Any]])?.map { "\($0["access"]!) \($0["topic"]!)" }
            #expect(rules == ["publish ${productId}/${deviceName}/up", "subscribe fleet/+/down", "all $thing/x/#"])

            // The page shows the values stuck, and the flash.
            let after = try await console.get(path)
            #expect(after.text.contains("Settings saved."))
            #expect(ConsoleClient.field("ratePerSecond", in: after.text) == "2.5")
            #expect(ConsoleClient.field("rateBurst", in: after.text) == "40")
            #expect(ConsoleClient.field("newDevicesPerHour", in: after.text) == "300")
            #expect(
                ConsoleClient.textarea("topicRules", in: after.text)
                    == "publish ${productId}/${deviceName}/up\nsubscribe fleet/+/down\nall $thing/x/#")

            // Empty fields: the server's default rate, no brake, no quota.
            let cleared = try await console.post(
                path,
                Self.settings(
                    after.text, ["ratePerSecond": "", "rateBurst": "", "newDevicesPerHour": "", "deviceQuota": ""]))
            #expect(cleared.status == 303)
            let plain = try await Self.product(server, id)
            #expect(plain["registrationRate"] is NSNull && plain["newDevicesPerHour"] is NSNull)
            #expect(plain["deviceQuota"] is NSNull)

            let updates = try await Self.outcomes(server, id).filter {
                $0["outcome"] as? String == "Admin.ProductUpdated"
            }
            #expect(updates.count == 2)
            #expect((updates.first?["endpoint"] as? String)?.hasPrefix("console, admin token ") == true)
        }
    }

    @Test(
        "bad input is refused with a message in the page, the form keeps what was typed, and nothing changes",
        arguments: [
            (["ratePerSecond": "5"], "Give both the registration rate and the burst"),
            (["ratePerSecond": "fast", "rateBurst": "3"], "must be a number a second"),
            (["ratePerSecond": "0", "rateBurst": "3"], "registrationRate needs perSecond 0.001-1000000"),
            (["newDevicesPerHour": "0"], "newDevicesPerHour must be 1-1000000000"),
            (["newDevicesPerHour": "-4"], "The new-device brake must be a whole number"),
            (["deviceQuota": "many"], "The device quota must be a whole number"),
            (["topicRules": "publish ok/1\nread a/b"], "Topic rule line 2: write publish, subscribe or all"),
            (["topicRules": "publish a/#/b"], "topicRules.rules[0].topic must be 1-256 bytes"),
            (["name": ""], "name must be 1-200 characters"),
        ])
    func refused(_ change: [String: String], _ message: String) async throws {
        try await TestServer.with { server in
            let console = try await ConsoleClient.signedIn(server)
            let (id, _) = try await server.createProduct(#"{"name":"steady","newDevicesPerHour":9}"#)
            let path = "/console/products/\(id)"
            let before = try await Self.product(server, id)
            let page = try await console.get(path)
            // Each refused form also changes other fields: none of them may stick.
            var fields = ["name": "renamed", "rateBurst": "", "ratePerSecond": "", "topicRules": "subscribe kept/+"]
            fields.merge(change) { $1 }
            let answer = try await console.post(path, Self.settings(page.text, fields))
            #expect(answer.status == 400, "\(answer.text)")
            #expect(answer.text.contains(ConsoleClient.escapedForTest(message)), "\(message): \(answer.text)")
            #expect(answer.text.contains("role=\"alert\""))
            // The form shows what was sent.
            #expect(ConsoleClient.field("name", in: answer.text) == fields["name"])
            #expect(ConsoleClient.textarea("topicRules", in: answer.text) == fields["topicRules"])
            if let rate = fields["ratePerSecond"] {
                #expect(ConsoleClient.field("ratePerSecond", in: answer.text) == rate)
            }
            // Nothing changed, limits included.
            let after = try await Self.product(server, id)
            #expect(after["name"] as? String == "steady")
            #expect(after["newDevicesPerHour"] as? Int == 9)
            #expect(try Self.canonical(after) == Self.canonical(before))
            #expect(
                !(try await Self.outcomes(server, id)).contains { $0["outcome"] as? String == "Admin.ProductUpdated" })
        }
    }

    @Test("a certificate product's trusted CAs are set from PEM text, checked by the admin API's rules")
    func trustedCAs() async throws {
        try await TestServer.with { server in
            let console = try await ConsoleClient.signedIn(server)
            let (id, _) = try await server.createCertificateProduct()
            let path = "/console/products/\(id)"
            let page = try await console.get(path)
            #expect(ConsoleClient.textarea("trustedCAs", in: page.text) == "")
            let first = try ProductCertificateAuthority.create(productId: "OPS1", keyType: .p256).certificatePEM
            let second = try ProductCertificateAuthority.create(productId: "OPS2", keyType: .p256).certificatePEM
            let saved = try await console.post(path, Self.settings(page.text, ["trustedCAs": first + "\n" + second]))
            #expect(saved.status == 303, "\(saved.text)")
            let trusted = try #require(try await Self.product(server, id)["trustedCaCertificatePems"] as? [String])
            #expect(trusted.count == 2)
            let shown = try await console.get(path)
            #expect(shown.text.contains("Trusted CAs (2)"))

            // A broken second certificate: refused, both kept in the text area, the product still trusts the two.
            let broken = first + "\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
            let refused = try await console.post(path, Self.settings(shown.text, ["trustedCAs": broken]))
            #expect(refused.status == 400)
            #expect(refused.text.contains("trustedCaCertificatePems[1]"), "\(refused.text)")
            #expect(ConsoleClient.textarea("trustedCAs", in: refused.text) == broken)
            #expect((try await Self.product(server, id)["trustedCaCertificatePems"] as? [String]) == trusted)

            // Empty: trusts none.
            let none = try await console.post(path, Self.settings(shown.text, ["trustedCAs": ""]))
            #expect(none.status == 303)
            #expect((try await Self.product(server, id)["trustedCaCertificatePems"] as? [String]) == [])
        }
    }

    @Test("a lockout after wrong signatures shows on the product page and is cleared from there, audited")
    func lockouts() async throws {
        try await TestServer.with(
            configure: LimitTests.configure { limits in limits.lockout.failures = 3 }
        ) { server in
            let console = try await ConsoleClient.signedIn(server)
            let product = try await server.createProduct()
            let path = "/console/products/\(product.id)"
            #expect(try await console.get(path).text.contains("None in force."))
            for index in 0..<3 {
                _ = try await server.register(
                    productId: product.id, deviceName: "g\(index)", secret: "guess", forwardedFor: "10.6.6.6")
            }
            let locked = try await server.register(
                productId: product.id, deviceName: "known", secret: product.secret, forwardedFor: "10.6.6.6")
            #expect(locked.errorCode == LimitTests.limited)
            let page = try await console.get(path)
            #expect(page.text.contains("<code>10.6.6.6</code>"))
            #expect(try await console.post("\(path)/lockouts/clear", [("address", "10.6.6.9")]).status == 404)
            let cleared = try await console.post("\(path)/lockouts/clear", [("address", "10.6.6.6")])
            #expect(cleared.status == 303)
            #expect(try await console.get(path).text.contains("Lockout of 10.6.6.6 cleared."))
            let listed = try await server.admin(.GET, "/products/\(product.id)/lockouts")
            #expect((listed.json["lockouts"] as? [Any])?.isEmpty == true)
            #expect(
                try await server.register(
                    productId: product.id, deviceName: "known", secret: product.secret, forwardedFor: "10.6.6.6"
                ).errorCode == nil)
            let audit = try await Self.outcomes(server, product.id).filter {
                $0["outcome"] as? String == "Admin.LockoutCleared"
            }
            #expect(audit.count == 1 && audit.first?["deviceName"] as? String == "10.6.6.6")
            // Without the CSRF token: refused.
            var forged = console
            forged.csrf = "wrong"
            #expect(try await forged.post("\(path)/lockouts/clear", [("address", "10.6.6.6")]).status == 403)
        }
    }
}

extension ConsoleClient {
    /// `message` as the templates write it into HTML.
    static func escapedForTest(_ message: String) -> String {
        message.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
            .replacingOccurrences(of: "'", with: "&#39;")
    }
}
