import Crypto
import DynRegProtocol
package import Foundation
import SwiftASN1
import X509

/// Certificates a device already holds (IoT Hub's `ClientCert`), checked against the CAs its product trusts.
package enum DeviceCertificates {
    /// Why a device certificate was refused; the text goes to the device, so it names no secret.
    package struct Refusal: Error, Sendable, Hashable, CustomStringConvertible {
        package var description: String
        init(_ description: String) { self.description = description }
    }

    /// A trusted CA as an operator gives it: a PEM X.509 CA certificate that may sign certificates, valid `now`.
    /// Returns it in this server's PEM form.
    package static func trustedAuthority(pem: String, now: Date = Date()) throws(CertificateAuthorityError) -> String {
        guard let der = PEM.firstDocumentDER(in: pem), let certificate = try? Certificate(derEncoded: der) else {
            throw CertificateAuthorityError(.invalidCertificate)
        }
        guard case .isCertificateAuthority = (try? certificate.extensions.basicConstraints) ?? .notCertificateAuthority,
            (try? certificate.extensions.keyUsage)?.keyCertSign ?? true
        else { throw CertificateAuthorityError(.notACertificateAuthority) }
        guard certificate.notValidBefore <= now, now <= certificate.notValidAfter else {
            throw CertificateAuthorityError(.invalidCertificate)
        }
        return PEM.encode(type: "CERTIFICATE", der: der)
    }

    /// Checks `pem` the way IoT Hub does for a product with an operator's own CA: it chains to one of `trusted`
    /// (PEM CA certificates), is within its validity, is a client certificate, and its common name names the
    /// device, as ProductId + DeviceName or as the DeviceName alone.
    package static func verify(
        pem: String, trusted: [String], productId: String, deviceName: String, now: Date = Date()
    ) async throws(Refusal) -> IssuedCertificate {
        guard let der = PEM.firstDocumentDER(in: pem), let leaf = try? Certificate(derEncoded: der) else {
            throw Refusal("ClientCert is not a PEM X.509 certificate")
        }
        guard leaf.notValidBefore <= now, now <= leaf.notValidAfter else {
            throw Refusal("ClientCert is outside its validity period")
        }
        let commonNames = leaf.subject.flatMap { $0 }.filter { $0.type == .RDNAttributeType.commonName }
            .map { String(describing: $0.value) }
        guard commonNames.count == 1, [productId + deviceName, deviceName].contains(commonNames[0]) else {
            throw Refusal("ClientCert's common name must be the product id followed by the device name")
        }
        let roots = trusted.compactMap { PEM.firstDocumentDER(in: $0).flatMap { try? Certificate(derEncoded: $0) } }
        guard !roots.isEmpty else { throw Refusal("the product trusts no CA for device certificates") }
        var verifier = Verifier(rootCertificates: CertificateStore(roots)) {
            RFC5280Policy()
            ClientCertificatePolicy()
        }
        guard case .validCertificate = await verifier.validate(leaf: leaf, intermediates: CertificateStore()) else {
            throw Refusal("ClientCert is not a client certificate signed by a CA this product trusts")
        }
        var serializer = DER.Serializer()
        do { try serializer.serialize(leaf) } catch { throw Refusal("ClientCert cannot be re-encoded") }
        let canonical = serializer.serializedBytes
        return IssuedCertificate(
            serialHex: Hex.lowercase(leaf.serialNumber.bytes), fingerprint: Hex.lowercase(SHA256.hash(data: canonical)),
            pem: PEM.encode(type: "CERTIFICATE", der: canonical), notBefore: leaf.notValidBefore,
            notAfter: leaf.notValidAfter)
    }
}

/// The leaf is an end entity for TLS clients: not a CA, and its key usages, where present, allow it.
private struct ClientCertificatePolicy: VerifierPolicy {
    let verifyingCriticalExtensions: [ASN1ObjectIdentifier] = [
        .X509ExtensionID.keyUsage, .X509ExtensionID.extendedKeyUsage,
    ]

    func chainMeetsPolicyRequirements(chain: UnverifiedCertificateChain) async -> PolicyEvaluationResult {
        let leaf = chain.leaf
        do {
            if case .isCertificateAuthority = try leaf.extensions.basicConstraints {
                return .failsToMeetPolicy(reason: "a CA certificate")
            }
            if let keyUsage = try leaf.extensions.keyUsage, !keyUsage.digitalSignature {
                return .failsToMeetPolicy(reason: "key usage without digitalSignature")
            }
            if let usage = try leaf.extensions.extendedKeyUsage, !usage.contains(.clientAuth) {
                return .failsToMeetPolicy(reason: "no clientAuth usage")
            }
            return .meetsPolicy
        } catch {
            return .failsToMeetPolicy(reason: "an extension does not decode")
        }
    }
}
