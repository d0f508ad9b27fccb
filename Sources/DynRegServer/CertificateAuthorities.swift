import Crypto
package import DynRegCA
package import DynRegStore
import Foundation
import Synchronization

/// Opened product CAs, cached: unsealing and parsing a CA key costs more than issuing with it. Their CRLs too.
final class CertificateAuthorities: Sendable {
    let masterKey: MasterKey
    private let cache = Mutex<[String: (sealed: String, authority: ProductCertificateAuthority)]>([:])
    private let crls = Mutex<[String: SignedCRL]>([:])

    /// A CRL as signed, and what it was signed over.
    private struct SignedCRL {
        var digest: [UInt8]
        var signedAt: Date
        var pem: String
    }

    /// A cached CRL is signed again after a day even if nothing changed, so its next update (7 days) stays far.
    static let crlMaximumAge: TimeInterval = 86_400

    init(masterKey: MasterKey) {
        self.masterKey = masterKey
    }

    func authority(for product: Product) throws -> ProductCertificateAuthority? {
        guard let stored = product.certificateAuthority else { return nil }
        if let cached = cache.withLock({ $0[product.id] }), cached.sealed == stored.sealedPrivateKey {
            return cached.authority
        }
        let keyPEM = try masterKey.open(stored.sealedPrivateKey, for: .caKey(productId: product.id))
        let authority = try ProductCertificateAuthority(certificatePEM: stored.certificatePEM, privateKeyPEM: keyPEM)
        cache.withLock { $0[product.id] = (stored.sealedPrivateKey, authority) }
        return authority
    }

    /// The product's CRL, as the admin API and `--crl-dir` serve it: numbered by the second (increasing across
    /// restarts and instances without shared state), without certificates that expired more than a CRL period
    /// (7 days) ago, signed off the request threads. The same bytes as last time while its entries are the same
    /// (from this instance or another sharing the store) and it is less than a day old.
    func crl(for product: Product, revoked: [DeviceCertificate], now: Date) async throws -> String {
        guard let authority = try authority(for: product) else {
            throw CertificateAuthorityError(.notACertificateAuthority)
        }
        let horizon = now.addingTimeInterval(-7 * 86_400)
        let entries = revoked.filter { $0.notAfter > horizon }.map { ($0.serial, $0.revokedAt ?? now) }
        var hash = SHA256()
        hash.update(data: Array(authority.certificatePEM.utf8))
        for (serial, revokedAt) in entries {
            hash.update(data: Array("\n\(serial) \(Int64(revokedAt.timeIntervalSince1970))".utf8))
        }
        let digest = Array(hash.finalize())
        if let cached = crls.withLock({ $0[product.id] }), cached.digest == digest,
            (0..<Self.crlMaximumAge).contains(now.timeIntervalSince(cached.signedAt))
        {
            return cached.pem
        }
        let pem = try await CryptoWork.run {
            try authority.crl(revoked: entries, number: Int(now.timeIntervalSince1970), now: now)
        }
        crls.withLock { $0[product.id] = SignedCRL(digest: digest, signedAt: now, pem: pem) }
        return pem
    }

    /// Seals a CA for storage with its product.
    func stored(
        _ authority: ProductCertificateAuthority, productId: String, validityDays: Int
    ) throws
        -> StoredCertificateAuthority
    {
        StoredCertificateAuthority(
            certificatePEM: authority.certificatePEM,
            sealedPrivateKey: try masterKey.seal(authority.privateKeyPEM, for: .caKey(productId: productId)),
            keyType: authority.keyType.rawValue, certificateValidityDays: validityDays)
    }
}

/// Refuses to start with a master key that cannot open what the store keeps sealed: silent garbage is worse than no
/// start. The store opens every product secret as it lists the products (throwing ``MasterKeyError``), and this
/// opens every CA key. Psks are sealed under the same key as their product's secret, so they are not opened one by
/// one (a store can hold millions).
package func checkMasterKey(_ masterKey: MasterKey, store: some RegistrationStore) async throws {
    for product in try await store.products() {
        guard let stored = product.certificateAuthority else { continue }
        _ = try masterKey.open(stored.sealedPrivateKey, for: .caKey(productId: product.id))
    }
}
