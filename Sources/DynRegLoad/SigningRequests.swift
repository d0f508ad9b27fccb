import Crypto
import SwiftASN1
import X509

extension RequestFactory {
    /// One PEM CSR per device, each for a fresh P-256 key, made before the measurement: a device makes its key and
    /// request before it calls the server, so their cost is not the server's. `note` hears how far it is.
    package static func signingRequests(
        productId: String, devicePrefix: String, count: Int, note: (String) -> Void
    ) throws -> [String] {
        note("making \(count) keys and certificate signing requests")
        var requests: [String] = []
        requests.reserveCapacity(count)
        for index in 0..<count {
            let key = P256.Signing.PrivateKey(compactRepresentable: false)
            let request = try CertificateSigningRequest(
                version: .v1, subject: try DistinguishedName { CommonName(productId + "\(devicePrefix)-\(index)") },
                privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
                signatureAlgorithm: .ecdsaWithSHA256)
            requests.append(try request.serializeAsPEM().pemString)
            // About 100 µs each: a large run takes a while.
            if count >= 20_000, (index + 1) % (count / 10) == 0 {
                note("\(index + 1)/\(count) requests made")
            }
        }
        return requests
    }
}
