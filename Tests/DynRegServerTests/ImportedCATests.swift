import Crypto
import DynRegCA
import DynRegProtocol
import DynRegTestSupport
import Foundation
import NIOHTTP1
import SwiftASN1
import Testing
import X509

/// What an operator's own CA must be before a product takes it, and what its certificates may be.
@Suite("Imported CAs")
struct ImportedCATests {
    /// A self-signed P-256 CA with the given validity and key usage (`nil`: no keyUsage extension at all).
    static func operatorCA(
        notBefore: Date = Date().addingTimeInterval(-3600), notAfter: Date = Date().addingTimeInterval(365 * 86_400),
        keyUsage: KeyUsage? = KeyUsage(keyCertSign: true, cRLSign: true)
    ) throws -> (certificatePEM: String, keyPEM: String) {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName { CommonName("operator CA") }
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(), publicKey: .init(key.publicKey),
            notValidBefore: notBefore, notValidAfter: notAfter, issuer: name, subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                if let keyUsage { Critical(keyUsage) }
            },
            issuerPrivateKey: .init(key))
        return (try certificate.serializeAsPEM().pemString, key.pemRepresentation)
    }

    static func importing(
        _ server: TestServer, _ ca: (certificatePEM: String, keyPEM: String)
    ) async throws -> TestServer.Answer {
        let body = try JSONSerialization.data(withJSONObject: [
            "name": "imported", "authType": "certificate", "caCertificatePem": ca.certificatePEM,
            "caPrivateKeyPem": ca.keyPEM,
        ])
        return try await server.admin(.POST, "/products", json: String(decoding: body, as: UTF8.self))
    }

    @Test("an expired CA, a CA not valid yet, and CAs that may not sign certificates are refused with the reason")
    func refused() async throws {
        let now = Date()
        let cases: [((certificatePEM: String, keyPEM: String), String)] = [
            (try Self.operatorCA(notBefore: now - 400 * 86_400, notAfter: now - 86_400), "has expired"),
            (try Self.operatorCA(notBefore: now + 86_400, notAfter: now + 400 * 86_400), "not valid yet"),
            (try Self.operatorCA(keyUsage: KeyUsage(digitalSignature: true)), "keyCertSign"),
            (try Self.operatorCA(keyUsage: nil), "keyCertSign"),
        ]
        try await TestServer.with { server in
            for (ca, reason) in cases {
                let answer = try await Self.importing(server, ca)
                #expect(answer.status == 400, "\(answer.text)")
                let error = answer.json["error"] as? [String: Any]
                #expect(error?["code"] as? String == "InvalidCertificateAuthority")
                #expect((error?["message"] as? String)?.contains(reason) == true, "\(answer.text)")
            }
            let products = try await server.admin(.GET, "/products").json["products"] as? [Any]
            #expect(products?.isEmpty == true)
        }
    }

    @Test("a device certificate never outlives its CA")
    func leafValidityIsClipped() async throws {
        let caEnd = Date().addingTimeInterval(10 * 86_400)
        let ca = try Self.operatorCA(notAfter: caEnd)
        try await TestServer.with { server in
            let created = try await Self.importing(server, ca)
            #expect(created.status == 201, "\(created.text)")
            let id = try #require(created.json["productId"] as? String)
            let secret = try #require(created.json["productSecret"] as? String)
            let answer = try await server.register(productId: id, deviceName: "d", secret: secret)
            guard case .certificate(let pem, _) = try answer.credential(secret: secret) else {
                throw TestFailure("expected a certificate: \(answer.text)")
            }
            let leaf = try Certificate(pemEncoded: pem)
            let ca = try Certificate(pemEncoded: ca.certificatePEM)
            #expect(leaf.notValidAfter == ca.notValidAfter, "\(leaf.notValidAfter) vs \(ca.notValidAfter)")
        }
    }

    @Test("RSA keys: the real size is reported (3072), and one over 4096 bits is refused")
    func rsaSizes() async throws {
        try await TestServer.with { server in
            let created = try await server.createCertificateProduct(#""caKeyType":"rsa3072""#)
            let shown = try await server.admin(.GET, "/products/\(created.id)")
            #expect(shown.json["caKeyType"] as? String == "rsa3072")
            let rsa3072 = try ProductCertificateAuthority.create(productId: "OPERATOR", keyType: .rsa3072)
            let imported = try await Self.importing(server, (rsa3072.certificatePEM, rsa3072.privateKeyPEM))
            #expect(imported.json["caKeyType"] as? String == "rsa3072", "\(imported.text)")

            let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-rsa-\(UUID())")
            try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
            defer { try? FileManager.default.removeItem(at: directory) }
            let (keyPath, certPath) = (
                directory.appendingPathComponent("k.pem"), directory.appendingPathComponent("c.pem")
            )
            let made = try await runCommand(
                "openssl",
                [
                    "req", "-x509", "-newkey", "rsa:4608", "-nodes", "-subj", "/CN=big", "-days", "30",
                    "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                    "-keyout", keyPath.path, "-out", certPath.path,
                ])
            #expect(made.status == 0, "\(made.stderr)")
            let big = try await Self.importing(
                server,
                (try String(contentsOf: certPath, encoding: .utf8), try String(contentsOf: keyPath, encoding: .utf8)))
            #expect(big.status == 400, "\(big.text)")
            #expect(((big.json["error"] as? [String: Any])?["message"] as? String)?.contains("4096") == true)
        }
    }
}
