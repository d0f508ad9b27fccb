import Crypto
import DynRegProtocol
package import Foundation
import SwiftASN1
package import X509
import _CryptoExtras

/// The key algorithm of a product CA.
package enum CAKeyType: String, Sendable, Codable, Hashable, CaseIterable {
    case p256
    case p384
    case rsa2048
    case rsa3072
    case rsa4096
}

/// The key a device gets when the server makes it.
package enum DeviceKeyAlgorithm: String, Sendable, Hashable, CaseIterable {
    case p256
    case rsa2048
}

/// A CA private key, kept as the concrete type so CRLs can be signed without X509 internals.
enum CAKey: Sendable {
    case p256(P256.Signing.PrivateKey)
    case p384(P384.Signing.PrivateKey)
    case rsa(_RSA.Signing.PrivateKey)

    init(pem: String) throws(CertificateAuthorityError) {
        if let key = try? P256.Signing.PrivateKey(pemRepresentation: pem) {
            self = .p256(key)
        } else if let key = try? P384.Signing.PrivateKey(pemRepresentation: pem) {
            self = .p384(key)
        } else if let key = try? _RSA.Signing.PrivateKey(pemRepresentation: pem), key.keySizeInBits >= 2048 {
            // Any size loads: CAs stored before `importing` refused odd sizes must keep working.
            self = .rsa(key)
        } else {
            throw CertificateAuthorityError(.unsupportedKey)
        }
    }

    var type: CAKeyType {
        switch self {
        case .p256: return .p256
        case .p384: return .p384
        case .rsa(let key):
            // Odd sizes exist only in CAs imported before `importing` refused them: the nearest size below.
            switch key.keySizeInBits {
            case 4096...: return .rsa4096
            case 3072...: return .rsa3072
            default: return .rsa2048
            }
        }
    }

    var certificateKey: Certificate.PrivateKey {
        switch self {
        case .p256(let key): return Certificate.PrivateKey(key)
        case .p384(let key): return Certificate.PrivateKey(key)
        case .rsa(let key): return Certificate.PrivateKey(key)
        }
    }

    var pemRepresentation: String {
        switch self {
        case .p256(let key): return key.pemRepresentation
        case .p384(let key): return key.pemRepresentation
        case .rsa(let key): return key.pemRepresentation
        }
    }

    var signatureAlgorithm: Certificate.SignatureAlgorithm {
        switch self {
        case .p256: return .ecdsaWithSHA256
        case .p384: return .ecdsaWithSHA384
        case .rsa: return .sha256WithRSAEncryption
        }
    }

    /// DER AlgorithmIdentifier of `signatureAlgorithm`, for hand-built structures (the CRL).
    func serializeAlgorithmIdentifier(into coder: inout DER.Serializer) throws {
        try coder.appendConstructedNode(identifier: .sequence) { coder in
            switch self {
            case .p256: try coder.serialize(ASN1ObjectIdentifier("1.2.840.10045.4.3.2"))
            case .p384: try coder.serialize(ASN1ObjectIdentifier("1.2.840.10045.4.3.3"))
            case .rsa:
                try coder.serialize(ASN1ObjectIdentifier("1.2.840.113549.1.1.11"))
                try coder.serialize(ASN1Null())
            }
        }
    }

    /// The signature value's bytes as they go into a BIT STRING.
    func sign(_ message: [UInt8]) throws -> [UInt8] {
        switch self {
        case .p256(let key): return Array(try key.signature(for: SHA256.hash(data: message)).derRepresentation)
        case .p384(let key): return Array(try key.signature(for: SHA384.hash(data: message)).derRepresentation)
        case .rsa(let key):
            return Array(
                try key.signature(for: SHA256.hash(data: message), padding: .insecurePKCS1v1_5).rawRepresentation)
        }
    }
}

/// A certificate the CA issued: what the server keeps (never the device's private key).
package struct IssuedCertificate: Sendable, Hashable {
    package var serialHex: String
    /// Lower-case hex SHA-256 of the DER certificate.
    package var fingerprint: String
    package var pem: String
    package var notBefore: Date
    package var notAfter: Date
}

/// Why the CA refused or failed; descriptions never contain key material.
package struct CertificateAuthorityError: Error, Sendable, Hashable, CustomStringConvertible {
    package enum Code: String, Sendable, Hashable {
        case unsupportedKey
        case invalidCertificate
        case keyDoesNotMatchCertificate
        case notACertificateAuthority
        case csrInvalid
        case csrSignatureInvalid
        case csrSubjectMismatch
        case signingFailed
        case expired
        case notYetValid
        case cannotSignCertificates
    }

    package var code: Code
    package init(_ code: Code) { self.code = code }

    package var description: String {
        switch code {
        case .unsupportedKey: return "the CA key must be a PEM P-256, P-384 or RSA 2048, 3072 or 4096-bit private key"
        case .expired: return "the CA certificate has expired"
        case .notYetValid: return "the CA certificate is not valid yet (its notBefore is in the future)"
        case .cannotSignCertificates:
            return "the CA certificate does not allow signing certificates (keyUsage keyCertSign)"
        case .invalidCertificate: return "the CA certificate is not a valid PEM X.509 certificate"
        case .keyDoesNotMatchCertificate: return "the CA private key does not match the CA certificate"
        case .notACertificateAuthority: return "the certificate is not a CA certificate (basicConstraints CA:TRUE)"
        case .csrInvalid: return "the CSR is not a valid PEM PKCS#10 request"
        case .csrSignatureInvalid: return "the CSR signature does not verify"
        case .csrSubjectMismatch: return "the CSR subject common name is not the product id followed by the device name"
        case .signingFailed: return "the CA could not sign"
        }
    }
}

/// A product's certificate authority: issues device certificates and signs CRLs.
package struct ProductCertificateAuthority: Sendable {
    package let certificate: Certificate
    package let certificatePEM: String
    let key: CAKey

    package var keyType: CAKeyType { key.type }
    /// The CA private key as PEM, to be encrypted before it is stored.
    package var privateKeyPEM: String { key.pemRepresentation }

    /// Creates a new self-signed CA for a product.
    package static func create(
        productId: String, keyType: CAKeyType = .p256, now: Date = Date()
    ) throws
        -> ProductCertificateAuthority
    {
        let key: CAKey
        switch keyType {
        case .p256: key = .p256(P256.Signing.PrivateKey())
        case .p384: key = .p384(P384.Signing.PrivateKey())
        case .rsa2048: key = .rsa(try _RSA.Signing.PrivateKey(keySize: .bits2048))
        case .rsa3072: key = .rsa(try _RSA.Signing.PrivateKey(keySize: .bits3072))
        case .rsa4096: key = .rsa(try _RSA.Signing.PrivateKey(keySize: .bits4096))
        }
        let name = try DistinguishedName {
            OrganizationName("dynreg")
            CommonName("dynreg product \(productId) CA")
        }
        let publicKey = key.certificateKey.publicKey
        let certificate = try Certificate(
            version: .v3, serialNumber: Certificate.SerialNumber(bytes: randomSerial()), publicKey: publicKey,
            notValidBefore: now.addingTimeInterval(-300), notValidAfter: now.addingTimeInterval(30 * 365 * 86_400),
            issuer: name, subject: name, signatureAlgorithm: key.signatureAlgorithm,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(keyCertSign: true, cRLSign: true))
                SubjectKeyIdentifier(hash: publicKey)
            },
            issuerPrivateKey: key.certificateKey)
        return try ProductCertificateAuthority(certificate: certificate, key: key)
    }

    /// An operator's CA, checked before it is stored: valid now, allowed to sign certificates (`keyCertSign`), with
    /// a supported key. ``init(certificatePEM:privateKeyPEM:)`` alone loads a stored CA, which is not re-judged.
    package static func importing(
        certificatePEM: String, privateKeyPEM: String, now: Date = Date()
    ) throws(CertificateAuthorityError) -> ProductCertificateAuthority {
        let authority = try ProductCertificateAuthority(certificatePEM: certificatePEM, privateKeyPEM: privateKeyPEM)
        // Bigger RSA keys cost every registration their signing time (RSA-8192: about 50 ms of CPU each).
        if case .rsa(let key) = authority.key, ![2048, 3072, 4096].contains(key.keySizeInBits) {
            throw CertificateAuthorityError(.unsupportedKey)
        }
        let certificate = authority.certificate
        guard certificate.notValidBefore <= now else { throw CertificateAuthorityError(.notYetValid) }
        guard now < certificate.notValidAfter else { throw CertificateAuthorityError(.expired) }
        guard let usage = try? certificate.extensions.keyUsage, usage.keyCertSign else {
            throw CertificateAuthorityError(.cannotSignCertificates)
        }
        return authority
    }

    /// Loads a CA from PEM, checking the key matches and the certificate may issue certificates.
    package init(certificatePEM: String, privateKeyPEM: String) throws(CertificateAuthorityError) {
        let certificate: Certificate
        do {
            certificate = try Certificate(pemEncoded: certificatePEM)
        } catch {
            throw CertificateAuthorityError(.invalidCertificate)
        }
        try self.init(certificate: certificate, key: try CAKey(pem: privateKeyPEM))
    }

    private init(certificate: Certificate, key: CAKey) throws(CertificateAuthorityError) {
        guard certificate.publicKey == key.certificateKey.publicKey else {
            throw CertificateAuthorityError(.keyDoesNotMatchCertificate)
        }
        guard case .isCertificateAuthority = (try? certificate.extensions.basicConstraints) ?? .notCertificateAuthority
        else {
            throw CertificateAuthorityError(.notACertificateAuthority)
        }
        self.certificate = certificate
        self.key = key
        do {
            self.certificatePEM = try certificate.serializeAsPEM().pemString
        } catch {
            throw CertificateAuthorityError(.invalidCertificate)
        }
    }

    /// Issues a client certificate for `commonName` (the MQTT client id) and the given public key.
    package func issue(
        commonName: String, publicKey: Certificate.PublicKey, validityDays: Int, now: Date = Date()
    )
        throws(CertificateAuthorityError) -> IssuedCertificate
    {
        do {
            let serial = randomSerial()
            let notBefore = now.addingTimeInterval(-300)
            // Never past the CA's own end: a chain is only as valid as its shortest link.
            let notAfter = min(now.addingTimeInterval(TimeInterval(validityDays) * 86_400), certificate.notValidAfter)
            let subject = try DistinguishedName { CommonName(commonName) }
            let issuerKeyIdentifier = try certificate.extensions.subjectKeyIdentifier?.keyIdentifier
            let leaf = try Certificate(
                version: .v3, serialNumber: Certificate.SerialNumber(bytes: serial), publicKey: publicKey,
                notValidBefore: notBefore, notValidAfter: notAfter, issuer: certificate.subject, subject: subject,
                signatureAlgorithm: key.signatureAlgorithm,
                extensions: try Certificate.Extensions {
                    Critical(BasicConstraints.notCertificateAuthority)
                    Critical(KeyUsage(digitalSignature: true))
                    try ExtendedKeyUsage([.clientAuth])
                    SubjectKeyIdentifier(hash: publicKey)
                    if let issuerKeyIdentifier {
                        AuthorityKeyIdentifier(keyIdentifier: issuerKeyIdentifier)
                    }
                },
                issuerPrivateKey: key.certificateKey)
            var serializer = DER.Serializer()
            try serializer.serialize(leaf)
            let der = serializer.serializedBytes
            return IssuedCertificate(
                serialHex: Hex.lowercase(serial), fingerprint: Hex.lowercase(SHA256.hash(data: der)),
                pem: PEM.encode(type: "CERTIFICATE", der: der), notBefore: notBefore,
                notAfter: notAfter)
        } catch {
            throw CertificateAuthorityError(.signingFailed)
        }
    }

    /// Generates a key for the device and certifies it: the server-generated path of the protocol. P-256 by
    /// default; RSA-2048 for Tencent's Java SDK, which loads `clientKey` with `KeyFactory.getInstance("RSA")`.
    package func issueWithNewKey(
        commonName: String, validityDays: Int, keyType: DeviceKeyAlgorithm = .p256, now: Date = Date()
    )
        throws(CertificateAuthorityError) -> (certificate: IssuedCertificate, privateKeyPEM: String)
    {
        let publicKey: Certificate.PublicKey
        let pkcs8: Data
        switch keyType {
        case .p256:
            // Compact representability (the default) costs a second key generation half the time; unused here.
            let deviceKey = P256.Signing.PrivateKey(compactRepresentable: false)
            publicKey = Certificate.PublicKey(deviceKey.publicKey)
            pkcs8 = deviceKey.derRepresentation
        case .rsa2048:
            guard let deviceKey = try? _RSA.Signing.PrivateKey(keySize: .bits2048) else {
                throw CertificateAuthorityError(.signingFailed)
            }
            publicKey = Certificate.PublicKey(deviceKey.publicKey)
            pkcs8 = deviceKey.pkcs8DERRepresentation
        }
        let issued = try issue(commonName: commonName, publicKey: publicKey, validityDays: validityDays, now: now)
        // PKCS#8 ("BEGIN PRIVATE KEY") for both, as the protocol's clientKey and Java's PKCS8EncodedKeySpec expect.
        return (issued, PEM.encode(type: "PRIVATE KEY", der: pkcs8))
    }

    /// Checks a device's PKCS#10 request: a good signature and the expected common name.
    package static func verifyCSR(
        pem: String, expectedCommonName: String
    ) throws(CertificateAuthorityError)
        -> Certificate.PublicKey
    {
        let csr: CertificateSigningRequest
        do {
            csr = try CertificateSigningRequest(pemEncoded: pem)
        } catch {
            throw CertificateAuthorityError(.csrInvalid)
        }
        guard csr.publicKey.isValidSignature(csr.signature, for: csr) else {
            throw CertificateAuthorityError(.csrSignatureInvalid)
        }
        let commonNames = csr.subject.flatMap { $0 }.filter { $0.type == .RDNAttributeType.commonName }
            .map { String(describing: $0.value) }
        guard commonNames == [expectedCommonName] else { throw CertificateAuthorityError(.csrSubjectMismatch) }
        return csr.publicKey
    }

    /// A CRL listing the revoked serials, signed by this CA (RFC 5280 §5, version 2).
    package func crl(
        revoked: [(serialHex: String, revokedAt: Date)], number: Int, now: Date = Date(),
        validity: TimeInterval = 7 * 86_400
    )
        throws -> String
    {
        var tbs = DER.Serializer()
        try tbs.appendConstructedNode(identifier: .sequence) { coder in
            try coder.serialize(1)  // v2
            try key.serializeAlgorithmIdentifier(into: &coder)
            try coder.serialize(certificate.subject)
            try appendTime(now, into: &coder)
            try appendTime(now.addingTimeInterval(validity), into: &coder)
            if !revoked.isEmpty {
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    for entry in revoked {
                        try coder.appendConstructedNode(identifier: .sequence) { coder in
                            coder.appendPrimitiveNode(identifier: .integer) {
                                $0.append(contentsOf: Hex.bytes(entry.serialHex))
                            }
                            try appendTime(entry.revokedAt, into: &coder)
                        }
                    }
                }
            }
            try coder.appendConstructedNode(identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)) {
                coder in
                try coder.appendConstructedNode(identifier: .sequence) { coder in
                    if let keyIdentifier = try certificate.extensions.subjectKeyIdentifier?.keyIdentifier {
                        try coder.appendConstructedNode(identifier: .sequence) { coder in
                            try coder.serialize(ASN1ObjectIdentifier("2.5.29.35"))
                            coder.appendPrimitiveNode(identifier: .octetString) { bytes in
                                var inner = DER.Serializer()
                                inner.appendConstructedNode(identifier: .sequence) { coder in
                                    coder.appendPrimitiveNode(
                                        identifier: ASN1Identifier(tagWithNumber: 0, tagClass: .contextSpecific)
                                    ) { $0.append(contentsOf: keyIdentifier) }
                                }
                                bytes.append(contentsOf: inner.serializedBytes)
                            }
                        }
                    }
                    try coder.appendConstructedNode(identifier: .sequence) { coder in
                        try coder.serialize(ASN1ObjectIdentifier("2.5.29.20"))
                        try coder.appendPrimitiveNode(identifier: .octetString) { bytes in
                            var inner = DER.Serializer()
                            try inner.serialize(number)
                            bytes.append(contentsOf: inner.serializedBytes)
                        }
                    }
                }
            }
        }
        let tbsBytes = tbs.serializedBytes
        let signature = try key.sign(tbsBytes)
        var outer = DER.Serializer()
        try outer.appendConstructedNode(identifier: .sequence) { coder in
            coder.serializeRawBytes(tbsBytes)
            try key.serializeAlgorithmIdentifier(into: &coder)
            try coder.serialize(ASN1BitString(bytes: signature[...]))
        }
        return PEM.encode(type: "X509 CRL", der: outer.serializedBytes)
    }
}

/// A CRL time as RFC 5280 §5.1.2.4–6 wants it: UTCTime for 1950 through 2049, GeneralizedTime otherwise, whole
/// seconds (the fraction is dropped, not rounded) in UTC.
private func appendTime(_ date: Date, into coder: inout DER.Serializer) throws {
    let c = utcCalendar.dateComponents([.year, .month, .day, .hour, .minute, .second], from: date)
    let (year, month, day, hour, minute, second) = (c.year!, c.month!, c.day!, c.hour!, c.minute!, c.second!)
    if (1950..<2050).contains(year) {
        try coder.serialize(
            UTCTime(year: year, month: month, day: day, hours: hour, minutes: minute, seconds: second))
    } else {
        try coder.serialize(
            GeneralizedTime(
                year: year, month: month, day: day, hours: hour, minutes: minute, seconds: second,
                fractionalSeconds: 0))
    }
}

private let utcCalendar: Calendar = {
    var calendar = Calendar(identifier: .gregorian)
    calendar.timeZone = TimeZone(identifier: "UTC")!
    return calendar
}()

/// 16 random bytes, positive and without a leading zero byte.
func randomSerial() -> [UInt8] {
    var generator = SystemRandomNumberGenerator()
    var bytes = (0..<16).map { _ in UInt8.random(in: 0...255, using: &generator) }
    bytes[0] = (bytes[0] & 0x7F) | 0x40
    return bytes
}
