import DynRegProtocol
import DynRegServer
import DynRegStore
import Foundation
import NIOHTTP1
import Testing

@Suite("Device registration over HTTP")
struct RegistrationTests {
    @Test("v2: both algorithms, both body hashes for hmacsha1, key order and spaces, upper-case algorithm header")
    func successVariants() async throws {
        try await TestServer.withKeyProduct { server, product in
            var psks: Set<String> = []
            let cases: [(DynRegProtocol.SignatureAlgorithm, BodyHash?)] = [
                (.hmacSHA256, nil), (.hmacSHA1, nil), (.hmacSHA1, .sha256),
            ]
            for (index, (algorithm, hash)) in cases.enumerated() {
                let answer = try await server.register(
                    productId: product.id, deviceName: "dev-\(index)", secret: product.secret, algorithm: algorithm,
                    bodyHash: hash)
                #expect(answer.status == 200)
                #expect(answer.errorCode == nil, "\(answer.text)")
                let psk = try #require(try answer.credential(secret: product.secret).psk)
                #expect(Data(base64Encoded: psk)?.count == 16)
                psks.insert(psk)
            }
            #expect(psks.count == 3)
            let reordered = Array(#"{"DeviceName": "dev-x", "ProductId": "\#(product.id)"}"#.utf8)
            let answer = try await server.register(
                productId: product.id, deviceName: "dev-x", secret: product.secret, body: reordered,
                algorithmHeader: "HmacSha256")
            #expect(answer.errorCode == nil, "\(answer.text)")
            #expect(!answer.text.contains("\\/"))
        }
    }

    @Test("every answer carries its own lower-case version-4 UUID as RequestId, on both endpoints")
    func requestIds() async throws {
        try await TestServer.withKeyProduct { server, product in
            var ids: Set<String> = []
            let shape = #/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/#
            for index in 0..<10 {
                let ok = try await server.register(
                    productId: product.id, deviceName: "r\(index)", secret: product.secret)
                let refused = try await server.register(
                    productId: product.id, deviceName: "r\(index)", secret: "wrong-secret-0123456789")
                let legacy = try await server.registerLegacy(
                    productId: product.id, deviceName: "l\(index)", secret: product.secret)
                for (answer, key) in [(ok, "RequestId"), (refused, "RequestId"), (legacy, "requestId")] {
                    let fields = (answer.json["Response"] as? [String: Any]) ?? answer.json
                    let id = try #require(fields[key] as? String, "\(answer.text)")
                    #expect(id.wholeMatch(of: shape) != nil, "\(id)")
                    ids.insert(id)
                }
            }
            #expect(ids.count == 30)
        }
    }

    @Test("the success plaintext never escapes '/'")
    func noEscapedSlash() async throws {
        try await TestServer.withKeyProduct { server, product in
            for index in 0..<20 {
                let answer = try await server.register(
                    productId: product.id, deviceName: "d\(index)", secret: product.secret)
                guard case .success(let payload, _, _) = try RegistrationReply(decoding: answer.body) else {
                    Issue.record("expected success")
                    return
                }
                let plaintext = try PayloadCipher.decrypt(
                    payload: payload.payload, length: payload.length, productSecret: product.secret)
                #expect(!String(decoding: plaintext, as: UTF8.self).contains("\\/"))
            }
        }
    }

    @Test("Host with a port: the signature covers the host alone")
    func hostWithPort() async throws {
        try await TestServer.withKeyProduct { server, product in
            let ok = try await server.register(
                productId: product.id, deviceName: "a", secret: product.secret, signedHost: "iot.example.com",
                hostHeader: "iot.example.com:8443")
            #expect(ok.errorCode == nil, "\(ok.text)")
            let withPort = try await server.register(
                productId: product.id, deviceName: "b", secret: product.secret, signedHost: "iot.example.com:8443",
                hostHeader: "iot.example.com:8443")
            #expect(withPort.errorCode == "AuthFailure.SignatureFailure")
        }
    }

    @Test("public host names: every Tencent gateway name verifies by default, a configured list replaces them")
    func publicHosts() async throws {
        let gateways = [
            "ap-guangzhou.gateway.tencentdevices.com", "us-east.gateway.tencentdevices.com",
            "europe.gateway.tencentdevices.com", "ap-bangkok.gateway.tencentdevices.com", "gateway.tencentdevices.com",
        ]
        try await TestServer.withKeyProduct { server, product in
            for (index, gateway) in gateways.enumerated() {
                let answer = try await server.register(
                    productId: product.id, deviceName: "g\(index)", secret: product.secret, signedHost: gateway)
                #expect(answer.errorCode == nil, "\(gateway): \(answer.text)")
            }
        }
        let gateway = gateways[0]
        let proxy = "proxy.example.net"
        /// Registers one device per signed host and returns the error code each got.
        func codes(_ publicHosts: [String]?) async throws -> [String: String?] {
            try await TestServer.with(configure: { if let publicHosts { $0.publicHosts = publicHosts } }) { server in
                let product = try await server.createProduct()
                var codes: [String: String?] = [:]
                for (index, host) in [gateway, proxy].enumerated() {
                    codes[host] = try await server.register(
                        productId: product.id, deviceName: "d\(index)", secret: product.secret, signedHost: host
                    ).errorCode
                }
                return codes
            }
        }
        #expect(try await codes(nil) == [gateway: nil, proxy: "AuthFailure.SignatureFailure"])
        #expect(try await codes([proxy]) == [gateway: "AuthFailure.SignatureFailure", proxy: nil])
    }

    @Test("every v2 error code")
    func errorCodes() async throws {
        try await TestServer.withKeyProduct { server, product in
            let now = Int64(Date().timeIntervalSince1970)
            // Malformed body, missing and malformed headers.
            let notJSON = try await server.send(
                .POST, "/device/register", headers: [(DeviceRequestHeader.algorithm, "hmacsha256")],
                body: Array("nope".utf8))
            #expect(notJSON.status == 200)
            #expect(notJSON.errorCode == "InvalidParameter")
            let noHeaders = try await server.send(
                .POST, "/device/register",
                body: RegistrationRequestBody(productId: product.id, deviceName: "d").encodedJSON())
            #expect(noHeaders.errorCode == "InvalidParameter")
            let badAlgorithm = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, algorithmHeader: "hmacmd5")
            #expect(badAlgorithm.errorCode == "InvalidParameter")
            let oversized = try await server.send(
                .POST, "/device/register", headers: [(DeviceRequestHeader.algorithm, "hmacsha256")],
                body: Array(repeating: UInt8(ascii: " "), count: 5000))
            #expect(oversized.status == 200)
            #expect(oversized.errorCode == "InvalidParameter")
            let badName = try await server.register(
                productId: product.id, deviceName: "bad name", secret: product.secret)
            #expect(badName.errorCode == "InvalidParameterValue.DeviceNameInvalid")
            let noProduct = try await server.register(productId: "NOPRODUCT1", deviceName: "d", secret: product.secret)
            #expect(noProduct.errorCode == "ResourceNotFound.ProductNotExist")
            let badSignature = try await server.register(
                productId: product.id, deviceName: "d", secret: "wrong-secret-0123456789")
            #expect(badSignature.errorCode == "AuthFailure.SignatureFailure")
            let past = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, timestamp: now - 301)
            #expect(past.errorCode == "AuthFailure.SignatureExpire")
            let future = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, timestamp: now + 400)
            #expect(future.errorCode == "AuthFailure.SignatureExpire")
            let clockless = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, timestamp: 0)
            #expect(clockless.errorCode == "AuthFailure.SignatureExpire")
            let withinWindow = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, timestamp: now - 250)
            #expect(withinWindow.errorCode == nil)
            // Replay: the same (product, device, timestamp, nonce) inside the window, in another request (a
            // byte-identical one is a retry: RetryTests).
            let first = try await server.register(
                productId: product.id, deviceName: "r", secret: product.secret, timestamp: now, nonce: 42)
            #expect(first.errorCode == nil)
            let replay = try await server.register(
                productId: product.id, deviceName: "r", secret: product.secret, algorithm: .hmacSHA1, timestamp: now,
                nonce: 42)
            #expect(replay.errorCode == "AuthFailure.NonceReused")
            // Activated.
            _ = try await server.admin(.POST, "/products/\(product.id)/devices/r/activate")
            let activated = try await server.register(productId: product.id, deviceName: "r", secret: product.secret)
            #expect(activated.errorCode == "FailedOperation.DeviceAlreadyActivated")
            // Registration off.
            _ = try await server.admin(.PATCH, "/products/\(product.id)", json: #"{"dynamicRegistration":false}"#)
            let off = try await server.register(productId: product.id, deviceName: "d2", secret: product.secret)
            #expect(off.errorCode == "UnauthorizedOperation.DynamicRegistrationDisabled")
            #expect(off.text.contains("Not support dynamic device register, please check setting first"))
        }
    }

    @Test("auto-create off: unknown device refused, pre-created device registers")
    func autoCreateOff() async throws {
        try await TestServer.with { server in
            let product = try await server.createProduct(#"{"name":"strict","autoCreate":false}"#)
            let unknown = try await server.register(productId: product.id, deviceName: "d1", secret: product.secret)
            #expect(unknown.errorCode == "ResourceNotFound.DeviceNotExist")
            #expect(unknown.text.contains("Pre create mode: device not exists"))
            let legacyUnknown = try await server.registerLegacy(
                productId: product.id, deviceName: "d1", secret: product.secret)
            #expect(legacyUnknown.legacyCode == 1020)
            let created = try await server.admin(
                .POST, "/products/\(product.id)/devices", json: #"{"deviceName":"d1"}"#)
            #expect(created.status == 201)
            #expect(created.json["status"] as? String == "created")
            let known = try await server.register(productId: product.id, deviceName: "d1", secret: product.secret)
            #expect(known.errorCode == nil, "\(known.text)")
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/d1")
            #expect(device.json["status"] as? String == "registered")
        }
    }

    @Test("quota: new devices stop at the quota, re-registration does not count again")
    func quota() async throws {
        try await TestServer.with { server in
            let product = try await server.createProduct(#"{"name":"capped","deviceQuota":2}"#)
            for name in ["a", "b"] {
                let answer = try await server.register(productId: product.id, deviceName: name, secret: product.secret)
                #expect(answer.errorCode == nil)
            }
            let third = try await server.register(productId: product.id, deviceName: "c", secret: product.secret)
            #expect(third.errorCode == "LimitExceeded.DeviceQuota")
            let legacyThird = try await server.registerLegacy(
                productId: product.id, deviceName: "c", secret: product.secret)
            #expect(legacyThird.legacyCode == 1022)
            let again = try await server.register(productId: product.id, deviceName: "a", secret: product.secret)
            #expect(again.errorCode == nil)
            let show = try await server.admin(.GET, "/products/\(product.id)")
            #expect(show.json["deviceCount"] as? Int == 2)
        }
    }

    @Test("quota holds under 100 concurrent registrations")
    func quotaConcurrent() async throws {
        try await TestServer.with { server in
            let product = try await server.createProduct(#"{"name":"capped","deviceQuota":25}"#)
            let codes = try await withThrowingTaskGroup(of: String?.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        try await server.register(
                            productId: product.id, deviceName: "dev\(index)", secret: product.secret
                        ).errorCode
                    }
                }
                return try await group.reduce(into: [String?]()) { $0.append($1) }
            }
            #expect(codes.filter { $0 == nil }.count == 25)
            #expect(codes.filter { $0 == "LimitExceeded.DeviceQuota" }.count == 75)
            let show = try await server.admin(.GET, "/products/\(product.id)")
            #expect(show.json["deviceCount"] as? Int == 25)
        }
    }

    @Test("re-registration before activation issues a new psk; the old one stops working")
    func reRegistration() async throws {
        try await TestServer.withKeyProduct { server, product in
            let first = try await server.registeredPSK(product, deviceName: "d")
            let second = try await server.registeredPSK(product, deviceName: "d")
            #expect(first != second)
            let expiry = Int64(Date().timeIntervalSince1970) + 3600
            let old = try MQTTCredentials.derive(productId: product.id, deviceName: "d", psk: first, expiry: expiry)
            let oldAuth = try await server.send(
                .POST, "/device/auth", headers: TestServer.brokerAuthorization,
                body: Array(
                    #"{"clientid":"\#(old.clientId)","username":"\#(old.username)","password":"\#(old.password)"}"#.utf8
                ))
            #expect(oldAuth.json["result"] as? String == "deny")
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/d")
            #expect(device.json["registrationCount"] as? Int == 2)
            #expect(device.json["status"] as? String == "registered")
        }
    }

    @Test("clockless devices: refused by default, admitted when the product allows, nonce remembered")
    func clockless() async throws {
        try await TestServer.with { server in
            let product = try await server.createProduct(#"{"name":"rtc-less","allowClocklessDevices":true}"#)
            let first = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, timestamp: 0, nonce: 7)
            #expect(first.errorCode == nil, "\(first.text)")
            // After a reboot the same request again: its first answer. Anything else with the pair: a replay.
            let reboot = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, timestamp: 0, nonce: 7)
            #expect(reboot.payload != nil && reboot.payload == first.payload, "\(reboot.text)")
            let replay = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret, algorithm: .hmacSHA1, timestamp: 0,
                nonce: 7)
            #expect(replay.errorCode == "AuthFailure.NonceReused")
            // The window still applies to devices that do send a time.
            let past = try await server.register(
                productId: product.id, deviceName: "d", secret: product.secret,
                timestamp: Int64(Date().timeIntervalSince1970) - 1000)
            #expect(past.errorCode == "AuthFailure.SignatureExpire")
        }
    }

    @Test(
        "no device input produces a 500 or a non-JSON answer",
        arguments: [
            "", "{}", "[]", "null", "{\"ProductId\":1}", String(repeating: "{", count: 3000), "\u{0}\u{1}\u{2}",
            "{\"ProductId\":\"P\",\"DeviceName\":\"\(String(repeating: "x", count: 60))\"}",
        ])
    func hostileBodies(body: String) async throws {
        try await TestServer.with { server in
            for path in ["/device/register", "/register/dev", "/device/auth"] {
                let answer = try await server.send(
                    .POST, path,
                    headers: [
                        (DeviceRequestHeader.algorithm, "hmacsha256"), (DeviceRequestHeader.timestamp, "1"),
                        (DeviceRequestHeader.nonce, "1"), (DeviceRequestHeader.signature, "AAAA"),
                    ] + TestServer.brokerAuthorization,
                    body: Array(body.utf8))
                #expect(answer.status == 200)
                #expect(!answer.json.isEmpty)
            }
        }
    }
}
