import DynRegProtocol
import DynRegServer
import Foundation
import NIOHTTP1
import Testing

@Suite("Legacy endpoint and broker hook")
struct LegacyAndAuthTests {
    @Test("legacy: success and every error code")
    func legacy() async throws {
        try await TestServer.withKeyProduct { server, product in
            let ok = try await server.registerLegacy(
                productId: product.id, deviceName: "esp8266", secret: product.secret)
            #expect(ok.legacyCode == 0)
            #expect(ok.json["message"] as? String == "success")
            #expect(try ok.legacyCredential(secret: product.secret).psk != nil)
            let badSignature = try await server.registerLegacy(
                productId: product.id, deviceName: "x", secret: "wrong-secret-0123456789")
            #expect(badSignature.legacyCode == 1010)
            #expect(badSignature.json["message"] as? String == "Check signature failed")
            let badBody = try await server.send(.POST, "/register/dev", body: Array("deviceName=x".utf8))
            #expect(badBody.legacyCode == 1001)
            let badName = try await server.registerLegacy(
                productId: product.id, deviceName: "a b", secret: product.secret)
            #expect(badName.legacyCode == 1002)
            let noProduct = try await server.registerLegacy(productId: "NOPE", deviceName: "x", secret: product.secret)
            #expect(noProduct.legacyCode == 1003)
            let expired = try await server.registerLegacy(
                productId: product.id, deviceName: "x", secret: product.secret, timestamp: 1_551_234_565)
            #expect(expired.legacyCode == 1011)
            let now = Int64(Date().timeIntervalSince1970)
            _ = try await server.registerLegacy(
                productId: product.id, deviceName: "r", secret: product.secret, timestamp: now, nonce: 9)
            let replay = try await server.registerLegacy(
                productId: product.id, deviceName: "r", secret: product.secret, timestamp: now, nonce: 9, spaced: true)
            #expect(replay.legacyCode == 1012)
            _ = try await server.admin(.POST, "/products/\(product.id)/devices/r/activate")
            let activated = try await server.registerLegacy(
                productId: product.id, deviceName: "r", secret: product.secret)
            #expect(activated.legacyCode == 1021)
            _ = try await server.admin(.PATCH, "/products/\(product.id)", json: #"{"dynamicRegistration":false}"#)
            let off = try await server.registerLegacy(productId: product.id, deviceName: "y", secret: product.secret)
            #expect(off.legacyCode == 1004)
        }
    }

    @Test("broker hook: right credentials allow and activate, wrong ones deny, expiry is checked")
    func brokerHook() async throws {
        try await TestServer.withKeyProduct { server, product in
            let psk = try await server.registeredPSK(product, deviceName: "d")
            func auth(_ credentials: MQTTCredentials, password: String? = nil) async throws -> String? {
                let body =
                    #"{"clientid":"\#(credentials.clientId)","username":"\#(credentials.username)","password":"\#(password ?? credentials.password)"}"#
                return try await server.send(
                    .POST, "/device/auth", headers: TestServer.brokerAuthorization, body: Array(body.utf8)
                ).json["result"] as? String
            }
            let future = Int64(Date().timeIntervalSince1970) + 3600
            let good = try MQTTCredentials.derive(productId: product.id, deviceName: "d", psk: psk, expiry: future)
            #expect(try await auth(good, password: String(repeating: "0", count: 64) + ";hmacsha256") == "deny")
            let expired = try MQTTCredentials.derive(
                productId: product.id, deviceName: "d", psk: psk, expiry: Int64(Date().timeIntervalSince1970) - 10)
            #expect(try await auth(expired) == "deny")
            let before = try await server.admin(.GET, "/products/\(product.id)/devices/d")
            #expect(before.json["status"] as? String == "registered")
            #expect(try await auth(good) == "allow")
            let sha1 = try MQTTCredentials.derive(
                productId: product.id, deviceName: "d", psk: psk, algorithm: .hmacSHA1, expiry: future * 1000)
            #expect(try await auth(sha1) == "allow")
            let after = try await server.admin(.GET, "/products/\(product.id)/devices/d")
            #expect(after.json["status"] as? String == "activated")
            let again = try await server.register(productId: product.id, deviceName: "d", secret: product.secret)
            #expect(again.errorCode == "FailedOperation.DeviceAlreadyActivated")
            // Reset: the device may register again and gets a new psk.
            let reset = try await server.admin(.POST, "/products/\(product.id)/devices/d/reset")
            #expect(reset.json["status"] as? String == "created")
            #expect(try await auth(good) == "deny")
            let fresh = try await server.register(productId: product.id, deviceName: "d", secret: product.secret)
            #expect(fresh.errorCode == nil)
        }
    }
}
