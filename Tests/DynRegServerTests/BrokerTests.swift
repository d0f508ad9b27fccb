import DynRegProtocol
import DynRegServer
import DynRegStore
import DynRegTestSupport
import Foundation
import NIOHTTP1
import Testing

/// The broker endpoints over HTTP, as EMQX and RabbitMQ call them (the real brokers: interop/test_brokers.py).
@Suite("Broker endpoints")
struct BrokerTests {
    static let brokerPaths = [
        "/device/auth", "/device/acl", "/rabbitmq/user", "/rabbitmq/vhost", "/rabbitmq/resource", "/rabbitmq/topic",
    ]

    static func json(_ object: [String: Any]) throws -> [UInt8] {
        Array(try JSONSerialization.data(withJSONObject: object))
    }

    static func form(_ fields: [String: String]) -> [UInt8] {
        var components = URLComponents()
        components.queryItems = fields.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) }
        return Array((components.percentEncodedQuery ?? "").replacingOccurrences(of: "+", with: "%2B").utf8)
    }

    /// A registered key device and MQTT credentials valid for an hour.
    static func keyDevice(
        _ server: TestServer, _ json: String = #"{"name":"broker"}"#
    ) async throws -> (product: (id: String, secret: String), credentials: MQTTCredentials, expiry: Int64) {
        let product = try await server.createProduct(json)
        let psk = try await server.registeredPSK(product, deviceName: "dev.1")
        let expiry = Int64(Date().timeIntervalSince1970) + 3600
        return (
            product, try MQTTCredentials.derive(productId: product.id, deviceName: "dev.1", psk: psk, expiry: expiry),
            expiry
        )
    }

    @Test("without the broker token every broker endpoint answers 401 and changes nothing")
    func tokenRequired() async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct()
            _ = try await server.register(productId: product.id, deviceName: "cam", secret: product.secret)
            let list = try await server.admin(.GET, "/products/\(product.id)/devices/cam/certificates")
            let fingerprint = try #require(
                (list.json["certificates"] as? [[String: Any]])?.first?["fingerprint"] as? String)
            // The certificate is public: its fingerprint alone, from anyone, must not log the device in.
            let exploit = try Self.json(["clientid": product.id + "cam", "fingerprint": fingerprint])
            let wrongBasic = "Basic " + Data("broker:wrong".utf8).base64EncodedString()
            for headers in [[], [("Authorization", "Bearer wrong")], [("Authorization", wrongBasic)]] {
                for path in Self.brokerPaths {
                    let answer = try await server.send(.POST, path, headers: headers, body: exploit)
                    #expect(answer.status == 401, "\(path)")
                    #expect(!answer.text.contains("allow"))
                }
            }
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/cam")
            #expect(device.json["status"] as? String == "registered")
            // HTTP Basic with the token as the password is how RabbitMQ sends it.
            let basic = "Basic " + Data("broker:\(LiveServer.brokerToken)".utf8).base64EncodedString()
            let allowed = try await server.send(
                .POST, "/device/auth", headers: [("Authorization", basic)], body: exploit)
            #expect(allowed.json["result"] as? String == "allow", "\(allowed.text)")
        }
    }

    @Test("--max-login-lifetime refuses a username that expires too far away, on EMQX and RabbitMQ alike")
    func maxLoginLifetime() async throws {
        try await TestServer.with(configure: { $0.maxLoginLifetime = .seconds(7200) }) { server in
            let product = try await server.createProduct()
            let psk = try await server.registeredPSK(product, deviceName: "d")
            let now = Int64(Date().timeIntervalSince1970)
            for (lifetime, expected) in [(3600, "allow"), (7200 + 600, "deny"), (9_999_999_999 - now, "deny")] {
                let credentials = try MQTTCredentials.derive(
                    productId: product.id, deviceName: "d", psk: psk, expiry: now + Int64(lifetime))
                let emqx = try await server.send(
                    .POST, "/device/auth", headers: TestServer.brokerAuthorization,
                    body: try Self.json([
                        "clientid": credentials.clientId, "username": credentials.username,
                        "password": credentials.password,
                    ]))
                #expect(emqx.json["result"] as? String == expected, "\(lifetime): \(emqx.text)")
                let rabbit = try await server.send(
                    .POST, "/rabbitmq/user",
                    headers: TestServer.brokerAuthorization + [("Content-Type", "application/x-www-form-urlencoded")],
                    body: Self.form([
                        "username": credentials.username, "password": credentials.password, "vhost": "/",
                        "client_id": credentials.clientId,
                    ]))
                #expect(rabbit.text == expected, "\(lifetime): \(rabbit.text)")
            }
        }
    }

    @Test("EMQX authentication: is_superuser false, expire_at from the username, the device's acl ending in deny")
    func emqxAuthentication() async throws {
        try await TestServer.with { server in
            let (product, credentials, expiry) = try await Self.keyDevice(server)
            let answer = try await server.send(
                .POST, "/device/auth", headers: TestServer.brokerAuthorization,
                body: try Self.json([
                    "clientid": credentials.clientId, "username": credentials.username,
                    "password": credentials.password,
                ]))
            #expect(answer.json["result"] as? String == "allow", "\(answer.text)")
            #expect(answer.json["is_superuser"] as? Bool == false)
            #expect((answer.json["expire_at"] as? NSNumber)?.int64Value == expiry)
            let acl = try #require(answer.json["acl"] as? [[String: String]])
            #expect(acl.last == ["permission": "deny", "action": "all", "topic": "#"])
            #expect(acl.contains(["permission": "deny", "action": "all", "topic": "$thing/#"]))
            #expect(
                acl.contains([
                    "permission": "allow", "action": "publish", "topic": "$thing/up/property/\(product.id)/dev.1",
                ]))
            #expect(
                acl.contains(["permission": "allow", "action": "subscribe", "topic": "\(product.id)/dev.1/control"]))
            #expect(!answer.text.contains("\\/"))
            // A millisecond expiry is read as seconds; a far-future one sends no expire_at.
            let far = try MQTTCredentials.derive(
                productId: product.id, deviceName: "dev.1",
                psk: try #require(
                    try await server.store.device(productId: product.id, deviceName: "dev.1")?.psk),
                expiry: 9_999_999_999)
            let farAnswer = try await server.send(
                .POST, "/device/auth", headers: TestServer.brokerAuthorization,
                body: try Self.json(["clientid": far.clientId, "username": far.username, "password": far.password]))
            #expect(farAnswer.json["result"] as? String == "allow")
            #expect(farAnswer.json["expire_at"] == nil)
            // Another client id with these credentials is refused.
            let stolen = try await server.send(
                .POST, "/device/auth", headers: TestServer.brokerAuthorization,
                body: try Self.json([
                    "clientid": product.id + "other", "username": credentials.username,
                    "password": credentials.password,
                ]))
            #expect(stolen.json["result"] as? String == "deny")
        }
    }

    @Test("EMQX authorization: own topics in their direction, nothing else")
    func emqxAuthorization() async throws {
        try await TestServer.with { server in
            let (product, credentials, _) = try await Self.keyDevice(server)
            func check(_ topic: String, _ action: String, clientId: String? = nil) async throws -> String? {
                try await server.send(
                    .POST, "/device/acl", headers: TestServer.brokerAuthorization,
                    body: try Self.json([
                        "clientid": clientId ?? credentials.clientId, "username": credentials.username,
                        "topic": topic, "action": action,
                    ])
                ).json["result"] as? String
            }
            #expect(try await check("$thing/up/property/\(product.id)/dev.1", "publish") == "allow")
            #expect(try await check("$thing/down/property/\(product.id)/dev.1", "subscribe") == "allow")
            #expect(try await check("$thing/down/property/\(product.id)/dev.1", "publish") == "deny")
            #expect(try await check("$thing/up/property/\(product.id)/dev.2", "publish") == "deny")
            #expect(try await check("\(product.id)/+/data", "subscribe") == "deny")
            #expect(try await check("\(product.id)/dev.1/data", "subscribe", clientId: product.id + "dev.2") == "deny")
            // A product's own rule, through the admin API.
            let patched = try await server.admin(
                .PATCH, "/products/\(product.id)",
                json:
                    #"{"topicRules":{"includeDefaults":false,"rules":[{"topic":"fleet/${deviceName}/#","access":"all"}]}}"#
            )
            #expect(patched.status == 200, "\(patched.text)")
            #expect(try await check("fleet/dev.1/a/b", "publish") == "allow")
            #expect(try await check("fleet/dev.1/#", "subscribe") == "allow")
            #expect(try await check("$thing/up/property/\(product.id)/dev.1", "publish") == "deny")
            let bad = try await server.admin(
                .PATCH, "/products/\(product.id)",
                json: #"{"topicRules":{"includeDefaults":true,"rules":[{"topic":"a/#/b","access":"all"}]}}"#)
            #expect(bad.status == 400)
            #expect(bad.text.contains("InvalidTopicRule"))
        }
    }

    @Test(
        "RabbitMQ: allow or deny and nothing else; login, vhost, own queues and amq.topic, routing keys, no dotted names"
    )
    func rabbitMQ() async throws {
        try await TestServer.with { server in
            let (_, dotted, _) = try await Self.keyDevice(server)
            let product = try await server.createProduct()
            let psk = try await server.registeredPSK(product, deviceName: "dev-1")
            let credentials = try MQTTCredentials.derive(
                productId: product.id, deviceName: "dev-1", psk: psk, expiry: Int64(Date().timeIntervalSince1970) + 60)
            func ask(_ path: String, _ fields: [String: String]) async throws -> String {
                let answer = try await server.send(
                    .POST, "/rabbitmq/" + path,
                    headers: [("Content-Type", "application/x-www-form-urlencoded")] + TestServer.brokerAuthorization,
                    body: Self.form(fields))
                #expect(answer.status == 200)
                return answer.text
            }
            let user = credentials.username
            #expect(try await ask("user", ["username": user, "password": credentials.password]) == "allow")
            #expect(try await ask("user", ["username": user, "password": "0" + credentials.password]) == "deny")
            #expect(try await ask("user", ["username": user, "password": ""]) == "deny")
            #expect(try await ask("user", ["username": product.id + "dev-1"]) == "deny")  // holds no certificate
            // RabbitMQ cannot carry a device name with a dot (it turns `/` into `.` and back): refused at login.
            #expect(try await ask("user", ["username": dotted.username, "password": dotted.password]) == "deny")
            let dottedDevice = try await server.store.device(
                productId: dotted.clientId.prefix(10).description, deviceName: "dev.1")
            #expect(dottedDevice?.status == .registered)  // refused before a login could activate it
            #expect(try await ask("vhost", ["username": user, "vhost": "/", "ip": "127.0.0.1"]) == "allow")
            let queue = "mqtt-subscription-\(product.id)dev-1qos1"
            for permission in ["configure", "write", "read"] {
                #expect(
                    try await ask(
                        "resource",
                        ["username": user, "vhost": "/", "resource": "queue", "name": queue, "permission": permission])
                        == "allow")
            }
            #expect(
                try await ask(
                    "resource",
                    [
                        "username": user, "vhost": "/", "resource": "queue",
                        "name": "mqtt-subscription-\(product.id)dev-2qos1",
                        "permission": "read",
                    ]) == "deny")
            #expect(
                try await ask(
                    "resource",
                    [
                        "username": user, "vhost": "/", "resource": "exchange", "name": "amq.topic",
                        "permission": "write",
                    ])
                    == "allow")
            func topic(_ key: String, _ permission: String) async throws -> String {
                try await ask(
                    "topic",
                    [
                        "username": user, "vhost": "/", "resource": "topic", "name": "amq.topic",
                        "permission": permission, "routing_key": key,
                    ])
            }
            #expect(try await topic("$thing.up.property.\(product.id).dev-1", "write") == "allow")
            #expect(try await topic("$thing.down.property.\(product.id).dev-1", "read") == "allow")
            #expect(try await topic("$thing.up.property.\(product.id).dev-2", "write") == "deny")
            #expect(try await topic("\(product.id).*.data", "read") == "deny")
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/dev-1")
            #expect(device.json["status"] as? String == "activated")
        }
    }

    @Test("the CRL directory: every file at start, a new CRL after a revocation, then the command")
    func crlDirectory() async throws {
        let scratch = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-crl-\(UUID().uuidString)")
        let directory = scratch.appendingPathComponent("crls")
        let marker = scratch.appendingPathComponent("updated")
        try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: scratch) }
        try await TestServer.with(configure: {
            $0.crlDirectory = directory
            $0.crlUpdatedCommand = "echo x >> '\(marker.path)'"
        }) { server in
            let product = try await server.createCertificateProduct()
            _ = try await server.register(productId: product.id, deviceName: "cam", secret: product.secret)
            let crl = directory.appendingPathComponent("\(product.id).crl.pem")
            let ca = directory.appendingPathComponent("\(product.id).ca.pem")
            try await Self.eventually { FileManager.default.fileExists(atPath: crl.path) }
            #expect(
                try String(contentsOf: ca, encoding: .utf8)
                    == (try await server.admin(.GET, "/products/\(product.id)/ca").text) + "\n")
            let list = try await server.admin(.GET, "/products/\(product.id)/devices/cam/certificates")
            let serial = try #require((list.json["certificates"] as? [[String: Any]])?.first?["serial"] as? String)
            #expect(
                try await CertificateTests.openssl(["crl", "-in", crl.path, "-noout", "-text"]).output
                    .lowercased().contains(serial) == false)
            _ = try await server.admin(.POST, "/products/\(product.id)/certificates/\(serial)/revoke")
            try await Self.eventually {
                let text =
                    (try? await CertificateTests.openssl(["crl", "-in", crl.path, "-noout", "-text"]).output) ?? ""
                return text.lowercased().replacingOccurrences(of: ":", with: "").contains(serial.lowercased())
            }
            let bundle = try String(contentsOf: directory.appendingPathComponent("crl-bundle.pem"), encoding: .utf8)
            #expect(bundle == (try String(contentsOf: crl, encoding: .utf8)))
            let runs = try String(contentsOf: marker, encoding: .utf8).split(separator: "\n").count
            #expect(runs >= 2)
            let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter {
                $0.hasSuffix(".tmp")
            }
            #expect(leftovers.isEmpty)
        }
    }

    @Test("RSA-2048 device keys: openssl reads a 2048-bit RSA key that matches the certificate; under 5 KiB")
    func rsaDeviceKeys() async throws {
        try await TestServer.with { server in
            let product = try await server.createProduct(
                #"{"name":"java","authType":"certificate","deviceKeyType":"rsa2048"}"#)
            let answer = try await server.register(productId: product.id, deviceName: "j", secret: product.secret)
            #expect(answer.body.count <= 5120)
            guard case .certificate(let cert, let key) = try answer.credential(secret: product.secret) else {
                Issue.record("\(answer.text)")
                return
            }
            #expect(key.hasPrefix("-----BEGIN PRIVATE KEY-----\n"))
            let keyPath = try CertificateTests.write(key, "rsa.key", in: server.directory)
            let certPath = try CertificateTests.write(cert, "rsa.pem", in: server.directory)
            let text = try await CertificateTests.openssl(["pkey", "-in", keyPath, "-noout", "-text"]).output
            #expect(text.contains("Private-Key: (2048 bit"), "\(text.prefix(200))")
            let keyModulus = try await CertificateTests.openssl(["rsa", "-in", keyPath, "-noout", "-modulus"]).output
            let certModulus = try await CertificateTests.openssl(["x509", "-in", certPath, "-noout", "-modulus"]).output
            #expect(keyModulus == certModulus)
            let view = try await server.admin(.GET, "/products/\(product.id)")
            #expect(view.json["deviceKeyType"] as? String == "rsa2048")
        }
    }

    static func eventually(_ condition: () async throws -> Bool) async throws {
        for _ in 0..<100 {
            if try await condition() { return }
            try await Task.sleep(for: .milliseconds(50))
        }
        Issue.record("the condition did not hold within 5 s")
    }
}
