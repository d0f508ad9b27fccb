import Crypto
import DynRegCA
import DynRegProtocol
import DynRegServer
import DynRegStore
import DynRegTestSupport
import Foundation
import NIOHTTP1
import SwiftASN1
import Testing
import X509

/// Certificate products against the real server, checked with the `openssl` command line.
@Suite("Certificate products")
struct CertificateTests {
    static func openssl(_ arguments: [String], input: String? = nil) async throws -> (status: Int32, output: String) {
        let result = try await runCommand("openssl", arguments, input: input)
        return (result.status, result.stdout + result.stderr)
    }

    static func write(_ text: String, _ name: String, in directory: URL) throws -> String {
        let url = directory.appendingPathComponent(name)
        try text.write(to: url, atomically: true, encoding: .utf8)
        return url.path
    }

    func certificate(_ answer: TestServer.Answer, secret: String) throws -> (cert: String, key: String) {
        guard case .certificate(let cert, let key) = try answer.credential(secret: secret) else {
            throw TestFailure("expected a certificate credential, got \(answer.text)")
        }
        return (cert, key)
    }

    @Test(
        "server-generated key: openssl verifies chain, key, CN, EKU; revocation shows in the CRL",
        arguments: ["p256", "rsa2048"])
    func serverGeneratedKey(keyType: String) async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct(
                #""caKeyType":"\#(keyType)","certificateValidityDays":30"#)
            let answer = try await server.register(productId: product.id, deviceName: "cam-01", secret: product.secret)
            #expect(answer.errorCode == nil, "\(answer.text)")
            let (cert, key) = try certificate(answer, secret: product.secret)
            #expect(key.hasPrefix("-----BEGIN PRIVATE KEY-----"))
            let caAnswer = try await server.admin(.GET, "/products/\(product.id)/ca")
            #expect(caAnswer.status == 200)
            let dir = server.directory
            let caPath = try Self.write(caAnswer.text, "ca.pem", in: dir)
            let certPath = try Self.write(cert, "cert.pem", in: dir)
            let keyPath = try Self.write(key, "key.pem", in: dir)
            let verify = try await Self.openssl(["verify", "-CAfile", caPath, "-purpose", "sslclient", certPath])
            #expect(verify.status == 0, "\(verify.output)")
            let text = try await Self.openssl(["x509", "-in", certPath, "-noout", "-text"]).output
            #expect(text.contains("CN = \(product.id)cam-01") || text.contains("CN=\(product.id)cam-01"))
            #expect(text.contains("TLS Web Client Authentication"))
            #expect(text.contains("Digital Signature"))
            let certKey = try await Self.openssl(["x509", "-in", certPath, "-noout", "-pubkey"]).output
            let privateKey = try await Self.openssl(["pkey", "-in", keyPath, "-pubout"]).output
            #expect(certKey == privateKey)
            // Serial: 128 random bits.
            let serialLine = try await Self.openssl(["x509", "-in", certPath, "-noout", "-serial"]).output
            let serial = serialLine.replacingOccurrences(of: "serial=", with: "").trimmingCharacters(
                in: .whitespacesAndNewlines)
            #expect(serial.count == 32)
            // Re-registration revokes the previous certificate.
            let second = try await server.register(productId: product.id, deviceName: "cam-01", secret: product.secret)
            #expect(second.errorCode == nil)
            let list = try await server.admin(.GET, "/products/\(product.id)/devices/cam-01/certificates")
            let certificates = try #require(list.json["certificates"] as? [[String: Any]])
            #expect(certificates.count == 2)
            #expect(certificates.map { $0["status"] as? String } == ["valid", "revoked"])
            #expect(certificates.last?["serial"] as? String == serial.lowercased())
            let crl = try await server.admin(.GET, "/products/\(product.id)/crl")
            let crlPath = try Self.write(crl.text, "crl.pem", in: dir)
            let crlText = try await Self.openssl(["crl", "-in", crlPath, "-noout", "-text", "-CAfile", caPath])
            #expect(crlText.status == 0, "\(crlText.output)")
            #expect(crlText.output.contains("verify OK"))
            #expect(crlText.output.uppercased().contains(serial.uppercased()))
            // openssl verify with the CRL refuses the revoked certificate and accepts the current one.
            let revoked = try await Self.openssl([
                "verify", "-crl_check", "-CAfile", caPath, "-CRLfile", crlPath, certPath,
            ])
            #expect(revoked.status != 0)
            #expect(revoked.output.contains("revoked"))
            let (current, _) = try certificate(second, secret: product.secret)
            let currentPath = try Self.write(current, "current.pem", in: dir)
            let ok = try await Self.openssl([
                "verify", "-crl_check", "-CAfile", caPath, "-CRLfile", crlPath, currentPath,
            ])
            #expect(ok.status == 0, "\(ok.output)")
            // Explicit revocation through the admin API.
            let currentSerial = try #require(certificates.first?["serial"] as? String)
            let revoke = try await server.admin(.POST, "/products/\(product.id)/certificates/\(currentSerial)/revoke")
            #expect(revoke.json["status"] as? String == "revoked")
            let crl2 = try await server.admin(.GET, "/products/\(product.id)/crl")
            #expect(
                try await Self.openssl(["crl", "-noout", "-text"], input: crl2.text).output.uppercased().contains(
                    currentSerial.uppercased()))
        }
    }

    @Test("a device's certificates are listed a page at a time, newest first, with a cursor")
    func certificateListsArePaged() async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct()
            for _ in 0..<3 {
                let answer = try await server.register(productId: product.id, deviceName: "cam", secret: product.secret)
                #expect(answer.errorCode == nil, "\(answer.text)")
            }
            let path = "/products/\(product.id)/devices/cam/certificates"
            let first = try await server.admin(.GET, path + "?limit=2")
            let firstPage = try #require(first.json["certificates"] as? [[String: Any]])
            #expect(firstPage.map { $0["status"] as? String } == ["valid", "revoked"])
            let cursor = try #require(first.json["nextCursor"] as? String)
            #expect(cursor == firstPage.last?["serial"] as? String)
            let second = try await server.admin(.GET, path + "?limit=2&after=\(cursor)")
            let secondPage = try #require(second.json["certificates"] as? [[String: Any]])
            #expect(secondPage.map { $0["status"] as? String } == ["revoked"])
            #expect(second.json["nextCursor"] == nil)
            let serials = (firstPage + secondPage).compactMap { $0["serial"] as? String }
            #expect(Set(serials).count == 3)
        }
    }

    @Test("legacy endpoint issues certificates too")
    func legacyCertificate() async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct()
            let answer = try await server.registerLegacy(
                productId: product.id, deviceName: "c1", secret: product.secret)
            #expect(answer.legacyCode == 0, "\(answer.text)")
            guard case .certificate(let cert, let key) = try answer.legacyCredential(secret: product.secret) else {
                Issue.record("expected a certificate")
                return
            }
            #expect(cert.hasPrefix("-----BEGIN CERTIFICATE-----"))
            #expect(!key.isEmpty)
        }
    }

    static func csr(commonName: String, key: P256.Signing.PrivateKey = .init()) throws -> String {
        let request = try CertificateSigningRequest(
            version: .v1, subject: try DistinguishedName { CommonName(commonName) },
            privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
            signatureAlgorithm: .ecdsaWithSHA256)
        return try request.serializeAsPEM().pemString
    }

    func registerWithCSR(
        _ server: TestServer, product: (id: String, secret: String), deviceName: String, csr: String
    )
        async throws -> TestServer.Answer
    {
        let body = RegistrationRequestBody(productId: product.id, deviceName: deviceName, csr: csr).encodedJSON()
        return try await server.register(
            productId: product.id, deviceName: deviceName, secret: product.secret, body: body)
    }

    @Test("CSR: the key never leaves the device; other names and bad signatures are refused")
    func csr() async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct()
            let deviceKey = P256.Signing.PrivateKey()
            let answer = try await registerWithCSR(
                server, product: product, deviceName: "cam-2",
                csr: try Self.csr(commonName: product.id + "cam-2", key: deviceKey))
            #expect(answer.errorCode == nil, "\(answer.text)")
            let (cert, key) = try certificate(answer, secret: product.secret)
            #expect(key.isEmpty)
            let parsed = try Certificate(pemEncoded: cert)
            #expect(parsed.publicKey == Certificate.PublicKey(deviceKey.publicKey))
            let caPath = try Self.write(
                try await server.admin(.GET, "/products/\(product.id)/ca").text, "ca.pem", in: server.directory)
            let certPath = try Self.write(cert, "csr-cert.pem", in: server.directory)
            #expect(try await Self.openssl(["verify", "-CAfile", caPath, certPath]).status == 0)

            let other = try await registerWithCSR(
                server, product: product, deviceName: "cam-3", csr: try Self.csr(commonName: product.id + "cam-2"))
            #expect(other.errorCode == "InvalidParameterValue.CsrSubjectMismatch")
            // Flip a byte inside the signature: the CSR parses but does not verify.
            var tampered = try Self.csr(commonName: product.id + "cam-4")
            let lines = tampered.split(separator: "\n").map(String.init)
            var der = Array(Data(base64Encoded: lines.dropFirst().dropLast().joined())!)
            der[der.count - 5] ^= 0x01
            tampered = PEMDocument(type: "CERTIFICATE REQUEST", derBytes: der).pemString
            let bad = try await registerWithCSR(server, product: product, deviceName: "cam-4", csr: tampered)
            #expect(bad.errorCode == "InvalidParameterValue.CsrInvalid")
            let garbage = try await registerWithCSR(server, product: product, deviceName: "cam-5", csr: "not a csr")
            #expect(garbage.errorCode == "InvalidParameterValue.CsrInvalid")
        }
    }

    @Test("broker hook accepts the device certificate (PEM or fingerprint) and refuses revoked ones")
    func certificateAuth() async throws {
        try await TestServer.with { server in
            let product = try await server.createCertificateProduct()
            let (cert, _) = try certificate(
                try await server.register(productId: product.id, deviceName: "cam", secret: product.secret),
                secret: product.secret)
            func auth(_ fields: [String: String]) async throws -> String? {
                let body = try JSONSerialization.data(
                    withJSONObject: fields.merging(["clientid": product.id + "cam"]) { a, _ in a })
                return try await server.send(
                    .POST, "/device/auth", headers: TestServer.brokerAuthorization, body: Array(body)
                ).json["result"] as? String
            }
            #expect(try await auth(["certificate": cert]) == "allow")
            let device = try await server.admin(.GET, "/products/\(product.id)/devices/cam")
            #expect(device.json["status"] as? String == "activated")
            let list = try await server.admin(.GET, "/products/\(product.id)/devices/cam/certificates")
            let first = try #require((list.json["certificates"] as? [[String: Any]])?.first)
            let fingerprint = try #require(first["fingerprint"] as? String)
            #expect(try await auth(["fingerprint": fingerprint.uppercased()]) == "allow")
            #expect(try await auth(["fingerprint": String(repeating: "0", count: 64)]) == "deny")
            // Line ends and indentation that forwarding proxies add are tolerated; broken PEM is refused.
            #expect(try await auth(["certificate": cert.replacingOccurrences(of: "\n", with: "\r\n")]) == "allow")
            let indented = cert.replacingOccurrences(of: "\n", with: "\n\t") + "\n"
            #expect(try await auth(["certificate": indented]) == "allow")
            #expect(try await auth(["certificate": String(cert.dropLast(30))]) == "deny")
            let broken = "-----BEGIN CERTIFICATE-----\n@@\n-----END CERTIFICATE-----"
            #expect(try await auth(["certificate": broken]) == "deny")
            _ = try await server.admin(
                .POST, "/products/\(product.id)/certificates/\(first["serial"] as! String)/revoke")
            #expect(try await auth(["certificate": cert]) == "deny")
        }
    }

    @Test("PEM text is SwiftASN1's and swift-crypto's, byte for byte, for every length; PEMDocument reads it back")
    func pemEncoding() async throws {
        for length in [0, 1, 2, 3, 47, 48, 49, 95, 96, 97, 500, 1000, 20_000] {
            let der = (0..<length).map { _ in UInt8.random(in: 0...255) }
            let pem = PEM.encode(type: "X509 CRL", der: der)
            #expect(pem == PEMDocument(type: "X509 CRL", derBytes: der).pemString)
            if length > 0 {
                #expect(PEM.firstDocumentDER(in: pem) == der)
                #expect(PEM.firstDocumentDER(in: pem + "\n" + PEM.encode(type: "CERTIFICATE", der: [1])) == der)
            }
        }
        #expect(PEM.firstDocumentDER(in: "no PEM here") == nil)
        let key = P256.Signing.PrivateKey(compactRepresentable: false)
        #expect(PEM.encode(type: "PRIVATE KEY", der: key.derRepresentation) == key.pemRepresentation)
        #expect(
            try P256.Signing.PrivateKey(pemRepresentation: PEM.encode(type: "PRIVATE KEY", der: key.derRepresentation))
                .rawRepresentation == key.rawRepresentation)
    }

    /// The time fields of a CRL at the RFC 5280 switch: UTCTime through 2049, GeneralizedTime from 2050.
    @Test("CRL times: UTCTime through 2049, GeneralizedTime from 2050, whole seconds; openssl reads and verifies them")
    func crlTimeBoundary() async throws {
        let authority = try ProductCertificateAuthority.create(productId: "BOUNDARY", keyType: .p256)
        // 2049-12-31T23:59:59Z, with a fraction that must be dropped, not rounded up into 2050.
        let lastSecond = Date(timeIntervalSince1970: 2_524_607_999.75)
        let pem = try authority.crl(
            revoked: [(serialHex: "4a0b", revokedAt: lastSecond)], number: 7, now: lastSecond, validity: 0.25)
        let der = try #require(PEM.firstDocumentDER(in: pem))
        func node(_ tag: UInt8, _ text: String) -> [UInt8] { [tag, UInt8(text.utf8.count)] + Array(text.utf8) }
        func count(_ needle: [UInt8]) -> Int {
            (0...(der.count - needle.count)).filter { der[$0..<($0 + needle.count)].elementsEqual(needle) }.count
        }
        #expect(count(node(0x17, "491231235959Z")) == 2, "thisUpdate and revocationDate as UTCTime")
        #expect(count(node(0x18, "20500101000000Z")) == 1, "nextUpdate as GeneralizedTime")

        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-crl-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let caPath = try Self.write(authority.certificatePEM, "ca.pem", in: directory)
        let text = try await Self.openssl(["crl", "-noout", "-text", "-CAfile", caPath], input: pem)
        #expect(text.status == 0, "\(text.output)")
        #expect(text.output.contains("verify OK"))
        #expect(text.output.contains("Last Update: Dec 31 23:59:59 2049 GMT"), "\(text.output)")
        #expect(text.output.contains("Next Update: Jan  1 00:00:00 2050 GMT"), "\(text.output)")
        #expect(text.output.contains("Revocation Date: Dec 31 23:59:59 2049 GMT"), "\(text.output)")
        let parsed = try await Self.openssl(["asn1parse", "-inform", "PEM"], input: pem).output
        #expect(parsed.contains("UTCTIME           :491231235959Z"), "\(parsed)")
        #expect(parsed.contains("GENERALIZEDTIME   :20500101000000Z"), "\(parsed)")
    }

    @Test("imported CA: operator's PEM certificate and key")
    func importedCA() async throws {
        try await TestServer.with { server in
            let authority = try ProductCertificateAuthority.create(productId: "OPERATOR", keyType: .p256)
            func importing(_ name: String, keyPEM: String) async throws -> TestServer.Answer {
                let body = try JSONSerialization.data(withJSONObject: [
                    "name": name, "authType": "certificate", "caCertificatePem": authority.certificatePEM,
                    "caPrivateKeyPem": keyPEM,
                ])
                return try await server.admin(.POST, "/products", json: String(decoding: body, as: UTF8.self))
            }
            let created = try await importing("imported", keyPEM: authority.privateKeyPEM)
            #expect(created.status == 201)
            let id = try #require(created.json["productId"] as? String)
            let secret = try #require(created.json["productSecret"] as? String)
            let ca = try await server.admin(.GET, "/products/\(id)/ca")
            #expect(ca.text == authority.certificatePEM)
            let answer = try await server.register(productId: id, deviceName: "d", secret: secret)
            let (cert, _) = try certificate(answer, secret: secret)
            let leaf = try Certificate(pemEncoded: cert)
            #expect(authority.certificate.publicKey.isValidSignature(leaf.signature, for: leaf))
            let other = try ProductCertificateAuthority.create(productId: "OTHER", keyType: .p256)
            let refused = try await importing("bad", keyPEM: other.privateKeyPEM)
            #expect(refused.status == 400)
        }
    }

    @Test("the CA private key is never in the database file in clear; a wrong master key is refused")
    func keyAtRest() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-ca-\(UUID().uuidString)")
        try await TestServer.with(directory: directory) { server in
            let product = try await server.createCertificateProduct()
            _ = try await server.register(productId: product.id, deviceName: "d", secret: product.secret)
            let stored = try #require(try await server.store.product(id: product.id)?.certificateAuthority)
            let keyPEM = try TestServer.masterKey.open(stored.sealedPrivateKey, for: .caKey(productId: product.id))
            let raw = Data(try PEMDocument(pemString: keyPEM).derBytes)
            let rawKey = try P256.Signing.PrivateKey(derRepresentation: raw).rawRepresentation
            // Every file of the database (main, WAL, shared memory).
            for file in try FileManager.default.contentsOfDirectory(atPath: directory.path)
            where file.hasPrefix("dynreg.sqlite") {
                let bytes = try Data(contentsOf: directory.appendingPathComponent(file))
                #expect(bytes.range(of: rawKey) == nil, "raw key bytes in \(file)")
                #expect(bytes.range(of: raw) == nil, "DER key in \(file)")
                #expect(bytes.range(of: Data(keyPEM.utf8)) == nil, "PEM key in \(file)")
                #expect(bytes.range(of: Data("PRIVATE KEY".utf8)) == nil, "a PEM private key in \(file)")
            }
        }
        let wrongKey = try MasterKey(encoded: String(repeating: "cd", count: 32))
        let store = try SQLiteStore(
            path: directory.appendingPathComponent("dynreg.sqlite").path, masterKey: LiveServer.masterKey)
        await #expect(throws: MasterKeyError.self) { try await checkMasterKey(wrongKey, store: store) }
        try await checkMasterKey(TestServer.masterKey, store: store)
    }
}
