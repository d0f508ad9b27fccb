package import DynRegCA
package import DynRegStore
import Foundation
import Synchronization

/// Opened product CAs, cached: unsealing and parsing a CA key costs more than issuing with it.
final class CertificateAuthorities: Sendable {
    let masterKey: MasterKey
    private let cache = Mutex<[String: (sealed: String, authority: ProductCertificateAuthority)]>([:])

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
