import Crypto
import DynRegClient
import DynRegProtocol
import Foundation
import NIOSSL
import SwiftASN1
import Testing
import X509

/// A private CA and a certificate it issued for 127.0.0.1, made fresh for each test.
private struct PrivateCA {
    var caPEM: String
    var serverTLS: TLSConfiguration

    init() throws {
        let now = Date()
        let caKey = P256.Signing.PrivateKey()
        let caName = try DistinguishedName { CommonName("dynreg client test CA") }
        let ca = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(caKey.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 3600, issuer: caName, subject: caName,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: nil))
                Critical(KeyUsage(keyCertSign: true))
            },
            issuerPrivateKey: .init(caKey))
        let serverKey = P256.Signing.PrivateKey()
        let server = try Certificate(
            version: .v3, serialNumber: .init(), publicKey: .init(serverKey.publicKey),
            notValidBefore: now - 3600, notValidAfter: now + 3600, issuer: caName,
            subject: try DistinguishedName { CommonName("127.0.0.1") },
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                SubjectAlternativeNames([.ipAddress(ASN1OctetString(contentBytes: [127, 0, 0, 1]))])
                try ExtendedKeyUsage([.serverAuth])
            },
            issuerPrivateKey: .init(caKey))
        caPEM = try ca.serializeAsPEM().pemString
        serverTLS = TLSConfiguration.makeServerConfiguration(
            certificateChain: [
                .certificate(try NIOSSLCertificate(bytes: Array(server.serializeAsPEM().pemString.utf8), format: .pem))
            ],
            privateKey: .privateKey(try NIOSSLPrivateKey(bytes: Array(serverKey.pemRepresentation.utf8), format: .pem)))
    }
}

@Suite("HTTPS with a private CA")
struct TrustRootTests {
    @Test("the configured trust roots verify the server's certificate")
    func trusted() async throws {
        let ca = try PrivateCA()
        try await withScriptedServer(tls: ca.serverTLS, { _, _ in .success() }) { baseURL, log in
            // One attempt with a long timeout: a TLS handshake on a loaded machine once outlasted 5 s and was retried.
            var configuration = fastConfiguration(baseURL, maxAttempts: 1, timeout: .seconds(30))
            configuration.trustRootsPEM = ca.caPEM
            let registered = try await DeviceRegistrar(configuration: configuration).registerFixture()
            #expect(registered.credential == .key(psk: Fixture.psk))
            #expect(await log.count == 1)
        }
    }

    @Test("without them, or with another CA, the certificate is refused and no request is sent")
    func untrusted() async throws {
        let ca = try PrivateCA()
        let otherCA = try PrivateCA()
        try await withScriptedServer(tls: ca.serverTLS, { _, _ in .success() }) { baseURL, log in
            for trustRoots in [nil, otherCA.caPEM] {
                var configuration = fastConfiguration(baseURL, maxAttempts: 1)
                configuration.trustRootsPEM = trustRoots
                let error = try await #require(throws: RegistrationError.self) {
                    try await DeviceRegistrar(configuration: configuration).registerFixture()
                }
                #expect(error.code == .transport)
                #expect(error.message.contains("not trusted"))
            }
            #expect(await log.count == 0)
        }
    }
}
