import DynRegCA
import DynRegProtocol
import DynRegServer
import DynRegStore
import Foundation
import NIOHTTP1
import Testing
import X509

/// IoT Hub's own-CA registration: the device sends `EncryptionType` 1 and `ClientCert`, a certificate it already
/// holds; the platform checks it against the CAs the product trusts and records it as the device's certificate.
@Suite("Devices that bring their own certificate (ClientCert)")
struct ClientCertTests {
    /// The operator's CA, outside dynreg: only its certificate is given to the server.
    static let operatorCA = try! ProductCertificateAuthority.create(productId: "OPERATOR", keyType: .p256)

    static func json(_ object: [String: Any]) throws -> String {
        String(decoding: try JSONSerialization.data(withJSONObject: object), as: UTF8.self)
    }

    /// A certificate product trusting `trusted`, with its id and secret.
    static func product(_ server: TestServer, trusting trusted: [String]) async throws -> (id: String, secret: String) {
        try await server.createProduct(
            json(["name": "own-ca", "authType": "certificate", "trustedCaCertificatePems": trusted]))
    }

    /// Registers `pem` for `device`, the body written by hand: `key` and raw newlines are as the caller says.
    static func register(
        _ server: TestServer, _ product: (id: String, secret: String), device: String, pem: String,
        key: String = "ClientCert", rawNewlines: Bool = false
    ) async throws -> TestServer.Answer {
        var body = try json(["ProductId": product.id, "DeviceName": device, "EncryptionType": 1, key: pem])
        if rawNewlines { body = body.replacingOccurrences(of: "\\n", with: "\n") }
        return try await server.register(
            productId: product.id, deviceName: device, secret: product.secret, body: Array(body.utf8))
    }

    @Test("a certificate from a trusted CA is accepted, recorded, and logs in; the answer holds no cert or key")
    func trustedCertificate() async throws {
        try await TestServer.with { server in
            let product = try await Self.product(server, trusting: [Self.operatorCA.certificatePEM])
            let (issued, _) = try Self.operatorCA.issueWithNewKey(commonName: product.id + "dev1", validityDays: 30)
            let answer = try await Self.register(server, product, device: "dev1", pem: issued.pem)
            #expect(answer.errorCode == nil, "\(answer.text)")
            #expect(try answer.credential(secret: product.secret) == .certificate(clientCert: "", clientKey: ""))
            let listed = try await server.admin(.GET, "/products/\(product.id)/devices/dev1/certificates")
            #expect(listed.text.contains(issued.fingerprint), "\(listed.text)")
            // The broker hook knows it as the device's certificate.
            let auth = try await server.send(
                .POST, "/device/auth", headers: [("Content-Type", "application/json")] + TestServer.brokerAuthorization,
                body: Array(try Self.json(["clientid": product.id + "dev1", "certificate": issued.pem]).utf8))
            #expect(auth.text.contains("allow"), "\(auth.text)")
        }
    }

    @Test("clientCert in lower case, raw newlines, and a common name of the device name alone")
    func cSDKSpelling() async throws {
        try await TestServer.with { server in
            let product = try await Self.product(server, trusting: [Self.operatorCA.certificatePEM])
            let (issued, _) = try Self.operatorCA.issueWithNewKey(commonName: "dev2", validityDays: 30)
            let answer = try await Self.register(
                server, product, device: "dev2", pem: issued.pem, key: "clientCert", rawNewlines: true)
            #expect(answer.errorCode == nil, "\(answer.text)")
        }
    }

    @Test("refused: an untrusted CA, another device's name, an expired certificate, a CA certificate, a key product")
    func refusals() async throws {
        try await TestServer.with { server in
            let product = try await Self.product(server, trusting: [Self.operatorCA.certificatePEM])
            let stranger = try ProductCertificateAuthority.create(productId: "STRANGER", keyType: .p256)
            let untrusted = try stranger.issueWithNewKey(commonName: product.id + "d", validityDays: 30).certificate
            let otherName = try Self.operatorCA.issueWithNewKey(commonName: product.id + "x", validityDays: 30)
                .certificate
            let expired = try Self.operatorCA.issueWithNewKey(
                commonName: product.id + "d", validityDays: 1, now: Date().addingTimeInterval(-10 * 86_400)
            ).certificate
            for pem in [untrusted.pem, otherName.pem, expired.pem, Self.operatorCA.certificatePEM, "not a PEM"] {
                let answer = try await Self.register(server, product, device: "d", pem: pem)
                #expect(answer.errorCode == "InvalidParameterValue.ClientCertInvalid", "\(answer.text)")
            }
            let keyProduct = try await server.createProduct()
            let issued = try Self.operatorCA.issueWithNewKey(commonName: keyProduct.id + "d", validityDays: 30)
            let answer = try await Self.register(server, keyProduct, device: "d", pem: issued.certificate.pem)
            #expect(answer.errorCode == "InvalidParameterValue.ClientCertInvalid", "\(answer.text)")
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/d")
            #expect(device.status == 404)
        }
    }

    @Test("the same certificate registers again; once revoked, never; the product's own CA is trusted too")
    func reRegistrationAndRevocation() async throws {
        try await TestServer.with { server in
            // An imported CA with its key: certificates it signed elsewhere are trusted as its own.
            let own = try ProductCertificateAuthority.create(productId: "OWN", keyType: .p256)
            let product = try await server.createProduct(
                Self.json([
                    "name": "imported", "authType": "certificate", "caCertificatePem": own.certificatePEM,
                    "caPrivateKeyPem": own.privateKeyPEM,
                ]))
            let issued = try own.issueWithNewKey(commonName: product.id + "d", validityDays: 30).certificate
            for _ in 0..<2 {
                let answer = try await Self.register(server, product, device: "d", pem: issued.pem)
                #expect(answer.errorCode == nil, "\(answer.text)")
            }
            let listed = try await server.admin(.GET, "/products/\(product.id)/devices/d/certificates")
            let certificates = listed.json["certificates"] as? [[String: Any]] ?? []
            #expect(certificates.count == 1, "\(listed.text)")
            let revoked = try await server.admin(
                .POST, "/products/\(product.id)/certificates/\(issued.serialHex)/revoke")
            #expect(revoked.status == 200, "\(revoked.text)")
            let again = try await Self.register(server, product, device: "d", pem: issued.pem)
            #expect(again.errorCode == "InvalidParameterValue.ClientCertInvalid", "\(again.text)")
            // The server-made key and the CSR still work on the same product.
            let made = try await server.register(productId: product.id, deviceName: "d", secret: product.secret)
            #expect(made.errorCode == nil, "\(made.text)")
        }
    }

    @Test("trusted CAs through the admin API: checked, shown, replaced on PATCH; key products have none")
    func administration() async throws {
        try await TestServer.with { server in
            let bad = try await server.admin(
                .POST, "/products",
                json: try Self.json(["name": "x", "authType": "certificate", "trustedCaCertificatePems": ["junk"]]))
            #expect(bad.status == 400)
            #expect(bad.text.contains("InvalidCertificateAuthority"), "\(bad.text)")
            let leaf = try Self.operatorCA.issueWithNewKey(commonName: "leaf", validityDays: 30).certificate
            let notCA = try await server.admin(
                .POST, "/products",
                json: try Self.json(["name": "x", "authType": "certificate", "trustedCaCertificatePems": [leaf.pem]]))
            #expect(notCA.status == 400)
            let product = try await Self.product(server, trusting: [])
            let (issued, _) = try Self.operatorCA.issueWithNewKey(commonName: product.id + "late", validityDays: 30)
            #expect(try await Self.register(server, product, device: "late", pem: issued.pem).errorCode != nil)
            let patched = try await server.admin(
                .PATCH, "/products/\(product.id)",
                json: try Self.json(["trustedCaCertificatePems": [Self.operatorCA.certificatePEM]]))
            #expect(patched.status == 200, "\(patched.text)")
            #expect((patched.json["trustedCaCertificatePems"] as? [String])?.count == 1)
            #expect(try await Self.register(server, product, device: "late", pem: issued.pem).errorCode == nil)
            let keyProduct = try await server.createProduct()
            let onKey = try await server.admin(
                .PATCH, "/products/\(keyProduct.id)",
                json: try Self.json(["trustedCaCertificatePems": [Self.operatorCA.certificatePEM]]))
            #expect(onKey.status == 400)
        }
    }
}
