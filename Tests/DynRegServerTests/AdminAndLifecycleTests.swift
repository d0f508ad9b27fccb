import DynRegProtocol
import DynRegServer
import DynRegStore
import DynRegTestSupport
import Foundation
import NIOHTTP1
import Testing

@Suite("Admin API, HTTPS and restarts")
struct AdminAndLifecycleTests {
    @Test("admin API: no token 401, wrong token 401, right token 200")
    func tokens() async throws {
        try await TestServer.with { server in
            let none = try await server.admin(.GET, "/products", token: nil)
            #expect(none.status == 401)
            #expect((none.json["error"] as? [String: Any])?["code"] as? String == "Unauthorized")
            let wrong = try await server.admin(.GET, "/products", token: "not-the-token")
            #expect(wrong.status == 401)
            let right = try await server.admin(.GET, "/products")
            #expect(right.status == 200)
            #expect(right.json["products"] is [Any])
        }
    }

    @Test("admin API: ten wrong tokens from one address lock it out for a while, the right token included")
    func wrongTokensLockTheAddress() async throws {
        try await TestServer.with { server in
            for attempt in 1...9 {
                // Shorter, longer, empty: each is one more failure, and none is told apart by its answer.
                let token = String(repeating: "x", count: attempt * 7)
                #expect(try await server.admin(.GET, "/products", token: token).status == 401)
            }
            #expect(try await server.admin(.GET, "/products").status == 200, "nine failures do not lock")
            let tenth = try await server.admin(.GET, "/products", token: "wrong")
            #expect(tenth.status == 429)
            #expect((tenth.json["error"] as? [String: Any])?["code"] as? String == "TooManyFailures")
            let locked = try await server.admin(.GET, "/products")
            #expect(locked.status == 429, "the right token waits too: \(locked.text)")
            let retryAfter = try #require(locked.headers.first(name: "Retry-After").flatMap { Int($0) })
            #expect((1...60).contains(retryAfter))
            // Device endpoints are not admin requests.
            let product = try await server.register(productId: "NOPRODUCT1", deviceName: "d", secret: "s")
            #expect(product.errorCode == "ResourceNotFound.ProductNotExist")
        }
    }

    @Test("admin API: products and devices lifecycle")
    func lifecycle() async throws {
        try await TestServer.with { server in
            let missingName = try await server.admin(.POST, "/products", json: "{}")
            #expect(missingName.status == 400)
            let badBody = try await server.admin(.POST, "/products", json: "not json")
            #expect(badBody.status == 400)
            let product = try await server.createProduct(#"{"name":"meters","authType":"key","deviceQuota":10}"#)
            let list = try await server.admin(.GET, "/products")
            let listed = try #require((list.json["products"] as? [[String: Any]])?.first)
            #expect(listed["productSecret"] == nil)
            let updated = try await server.admin(
                .PATCH, "/products/\(product.id)", json: #"{"autoCreate":false,"deviceQuota":null}"#)
            #expect(updated.json["autoCreate"] as? Bool == false)
            #expect(updated.json["deviceQuota"] is NSNull)
            let rotated = try await server.admin(.POST, "/products/\(product.id)/rotate-secret")
            let newSecret = try #require(rotated.json["productSecret"] as? String)
            #expect(newSecret != product.secret)
            #expect(newSecret.count >= 16)
            for name in ["a1", "a2", "a3"] {
                let created = try await server.admin(
                    .POST, "/products/\(product.id)/devices", json: #"{"deviceName":"\#(name)"}"#)
                #expect(created.status == 201)
            }
            let duplicate = try await server.admin(
                .POST, "/products/\(product.id)/devices", json: #"{"deviceName":"a1"}"#)
            #expect(duplicate.status == 409)
            let badName = try await server.admin(
                .POST, "/products/\(product.id)/devices", json: #"{"deviceName":"a b"}"#)
            #expect(badName.status == 400)
            // The old secret stops working, the new one works.
            let old = try await server.register(productId: product.id, deviceName: "a1", secret: product.secret)
            #expect(old.errorCode == "AuthFailure.SignatureFailure")
            let new = try await server.register(productId: product.id, deviceName: "a1", secret: newSecret)
            #expect(new.errorCode == nil)
            let page1 = try await server.admin(.GET, "/products/\(product.id)/devices?limit=2")
            #expect((page1.json["devices"] as? [Any])?.count == 2)
            let cursor = try #require(page1.json["nextCursor"] as? String)
            let page2 = try await server.admin(.GET, "/products/\(product.id)/devices?limit=2&after=\(cursor)")
            #expect((page2.json["devices"] as? [[String: Any]])?.map { $0["deviceName"] as? String } == ["a3"])
            let registered = try await server.admin(.GET, "/products/\(product.id)/devices?status=registered")
            #expect((registered.json["devices"] as? [[String: Any]])?.map { $0["deviceName"] as? String } == ["a1"])
            let badStatus = try await server.admin(.GET, "/products/\(product.id)/devices?status=bogus")
            #expect(badStatus.status == 400)
            let events = try await server.admin(.GET, "/products/\(product.id)/events")
            let outcomes = (events.json["events"] as? [[String: Any]])?.compactMap { $0["outcome"] as? String }
            // The wrong signature proved no secret: it is counted with the refusals, not an event of its own. The
            // rest are the operator's changes.
            #expect(outcomes?.filter { !$0.hasPrefix("Admin.") } == ["Success"])
            let refusals = try await server.admin(.GET, "/refusals?product=\(product.id)")
            let counted = try #require((refusals.json["refusals"] as? [[String: Any]])?.first)
            #expect(counted["outcome"] as? String == "AuthFailure.SignatureFailure")
            #expect(counted["count"] as? Int == 1)
            let event = try #require((events.json["events"] as? [[String: Any]])?.first)
            #expect(event["remoteAddress"] as? String == "127.0.0.1")
            #expect(event["endpoint"] as? String == "/device/register")
            let deleted = try await server.admin(.DELETE, "/products/\(product.id)/devices/a2")
            #expect(deleted.status == 204)
            let gone = try await server.admin(.GET, "/products/\(product.id)/devices/a2")
            #expect(gone.status == 404)
            let show = try await server.admin(.GET, "/products/\(product.id)")
            #expect(show.json["deviceCount"] as? Int == 2)
            let deleteProduct = try await server.admin(.DELETE, "/products/\(product.id)")
            #expect(deleteProduct.status == 204)
            let missing = try await server.admin(.GET, "/products/\(product.id)")
            #expect(missing.status == 404)
            let unknownRegistration = try await server.register(
                productId: product.id, deviceName: "a1", secret: newSecret)
            #expect(unknownRegistration.errorCode == "ResourceNotFound.ProductNotExist")
        }
    }

    @Test("health answers ok")
    func health() async throws {
        try await TestServer.with { server in
            let answer = try await server.send(.GET, "/health")
            #expect(answer.status == 200)
            #expect(answer.text == #"{"status":"ok"}"#)
        }
    }

    @Test("livez answers ok, on GET and HEAD")
    func livez() async throws {
        try await TestServer.with { server in
            let answer = try await server.send(.GET, "/livez")
            #expect(answer.status == 200)
            #expect(answer.text == #"{"status":"ok"}"#)
            let head = try await server.send(.HEAD, "/livez")
            #expect(head.status == 200)
            #expect(head.text.isEmpty)
        }
    }

    @Test("restarting keeps products, devices and credentials")
    func restart() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dynreg-restart-\(UUID().uuidString)")
        let (product, psk) = try await TestServer.with(directory: directory) { server in
            let product = try await server.createProduct()
            let psk = try await server.registeredPSK(product, deviceName: "d")
            return (product, psk)
        }
        try await TestServer.with(directory: directory) { server in
            let show = try await server.admin(.GET, "/products/\(product.id)")
            #expect(show.json["productSecret"] as? String == product.secret)
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/d")
            #expect(device.json["status"] as? String == "registered")
            let credentials = try MQTTCredentials.derive(
                productId: product.id, deviceName: "d", psk: psk, expiry: Int64(Date().timeIntervalSince1970) + 60)
            let auth = try await server.send(
                .POST, "/device/auth", headers: TestServer.brokerAuthorization,
                body: Array(
                    #"{"clientid":"\#(credentials.clientId)","username":"\#(credentials.username)","password":"\#(credentials.password)"}"#
                        .utf8))
            #expect(auth.json["result"] as? String == "allow")
        }
    }

    @Test("HTTPS with a self-signed certificate")
    func https() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-tls-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let cert = directory.appendingPathComponent("cert.pem").path
        let key = directory.appendingPathComponent("key.pem").path
        let openssl = try await runCommand(
            "openssl",
            [
                "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", key, "-out", cert, "-days", "1", "-subj", "/CN=127.0.0.1",
            ])
        #expect(openssl.status == 0, "\(openssl.stderr)")
        try await TestServer.with(
            directory: directory, configure: { $0.tls = .init(certificatePath: cert, keyPath: key) }
        ) { server in
            #expect(server.baseURL.hasPrefix("https://"))
            let product = try await server.createProduct()
            let answer = try await server.register(
                productId: product.id, deviceName: "tls-device", secret: product.secret)
            #expect(answer.errorCode == nil, "\(answer.text)")
            #expect(try answer.credential(secret: product.secret).psk != nil)
        }
    }
}
