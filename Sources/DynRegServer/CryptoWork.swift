import DynRegCA
import DynRegStore
import Foundation
import NIOPosix

/// Cryptography that takes milliseconds (an RSA key, a CRL signature) runs on NIO's blocking pool, not on the
/// cooperative threads that answer every other request: a burst of RSA registrations then slows only itself.
enum CryptoWork {
    static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
    }
}

extension ProductCertificateAuthority {
    /// The product's CRL, as the admin API and `--crl-dir` serve it: numbered by the second (increasing across
    /// restarts and instances without shared state), without certificates that expired more than a CRL period
    /// (7 days) ago, signed off the request threads.
    func signedCRL(of revoked: [DeviceCertificate], now: Date) async throws -> String {
        let horizon = now.addingTimeInterval(-7 * 86_400)
        let entries = revoked.filter { $0.notAfter > horizon }.map { ($0.serial, $0.revokedAt ?? now) }
        return try await CryptoWork.run {
            try self.crl(revoked: entries, number: Int(now.timeIntervalSince1970), now: now)
        }
    }
}
