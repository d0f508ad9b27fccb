import DynRegProtocol
import DynRegServer
import DynRegStore
import Foundation
import NIOHTTP1
import Testing

/// Deployed devices repeat requests byte for byte (a nonce seeded from the second, a lost answer, a reboot
/// without a clock): such a repeat gets its first answer, and any other reuse of the pair is still a replay.
@Suite("Byte-identical retries and State")
struct RetryTests {
    @Test("a byte-identical repeat gets the same Payload and State, issues nothing and is logged as a retry")
    func repeatGetsTheFirstAnswer() async throws {
        try await TestServer.withKeyProduct { server, product in
            let now = Int64(Date().timeIntervalSince1970)
            // The same timestamp and nonce: the same bytes each time.
            let send = {
                try await server.register(
                    productId: product.id, deviceName: "d", secret: product.secret, timestamp: now, nonce: 5)
            }
            let first = try await send()
            #expect(first.state == RegistrationReply.stateCreated, "\(first.text)")
            for _ in 0..<3 {
                let again = try await send()
                #expect(again.payload == first.payload, "\(again.text)")
                #expect(again.state == RegistrationReply.stateCreated)
            }
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/d")
            #expect(device.json["registrationCount"] as? Int == 1)
            let stored = try await server.store.device(productId: product.id, deviceName: "d")
            #expect(try stored?.psk == first.credential(secret: product.secret).psk)
            let events = try await server.admin(.GET, "/products/\(product.id)/events")
            let outcomes = (events.json["events"] as? [[String: Any]] ?? []).compactMap { $0["outcome"] as? String }
            #expect(
                outcomes.filter { !$0.hasPrefix("Admin.") }.sorted() == ["Retry", "Retry", "Retry", "Success"],
                "\(events.text)")
        }
    }

    @Test("the pair reused with any difference, after a newer registration, or after a reset: NonceReused")
    func otherReusesAreReplays() async throws {
        try await TestServer.withKeyProduct { server, product in
            let now = Int64(Date().timeIntervalSince1970)
            func send(
                _ device: String, nonce: Int64, algorithm: SignatureAlgorithm = .hmacSHA256, body: String? = nil
            ) async throws -> TestServer.Answer {
                try await server.register(
                    productId: product.id, deviceName: device, secret: product.secret, algorithm: algorithm,
                    timestamp: now, nonce: nonce, body: body.map { Array($0.utf8) })
            }
            #expect(try await send("a", nonce: 1).errorCode == nil)
            // Another algorithm, another body (white space): not the same request.
            #expect(try await send("a", nonce: 1, algorithm: .hmacSHA1).errorCode == "AuthFailure.NonceReused")
            let spaced = #"{"ProductId": "\#(product.id)","DeviceName":"a"}"#
            #expect(try await send("a", nonce: 1, body: spaced).errorCode == "AuthFailure.NonceReused")
            // A newer registration replaced the credential the first answer holds.
            #expect(try await send("b", nonce: 1).errorCode == nil)
            let newer = try await send("b", nonce: 2)
            #expect(newer.state == RegistrationReply.stateExisting)
            #expect(try await send("b", nonce: 1).errorCode == "AuthFailure.NonceReused")
            // A reset took it away.
            #expect(try await send("c", nonce: 1).errorCode == nil)
            _ = try await server.admin(.POST, "/products/\(product.id)/devices/c/reset")
            #expect(try await send("c", nonce: 1).errorCode == "AuthFailure.NonceReused")
            // An activated device registers no more, retry or not.
            #expect(try await send("e", nonce: 1).errorCode == nil)
            _ = try await server.admin(.POST, "/products/\(product.id)/devices/e/activate")
            #expect(try await send("e", nonce: 1).errorCode == "FailedOperation.DeviceAlreadyActivated")
        }
    }

    @Test("legacy: a byte-identical repeat gets the same payload; the answer has no State")
    func legacyRepeat() async throws {
        try await TestServer.withKeyProduct { server, product in
            let send = { [now = Int64(Date().timeIntervalSince1970)] in
                try await server.registerLegacy(
                    productId: product.id, deviceName: "l", secret: product.secret, timestamp: now, nonce: 3)
            }
            let (first, again) = (try await send(), try await send())
            #expect(first.legacyCode == 0 && again.legacyCode == 0, "\(again.text)")
            #expect(again.json["payload"] as? String == first.json["payload"] as? String)
            #expect(first.json["State"] == nil && first.json["state"] == nil)
        }
    }

    @Test("State: 0 for a device the registration creates, 1 for a pre-created or registered one")
    func state() async throws {
        try await TestServer.withKeyProduct { server, product in
            #expect(
                try await server.register(productId: product.id, deviceName: "new", secret: product.secret).state == 0)
            #expect(
                try await server.register(productId: product.id, deviceName: "new", secret: product.secret).state == 1)
            let created = try await server.admin(
                .POST, "/products/\(product.id)/devices", json: #"{"deviceName":"made"}"#)
            #expect(created.status == 201)
            #expect(
                try await server.register(productId: product.id, deviceName: "made", secret: product.secret).state == 1)
        }
    }
}
