import DynRegProtocol
package import DynRegStore
package import Foundation
package import Testing

/// Products, attempts and certificates the store tests build, and the checks they share.
package enum StoreSamples {

    // Whole seconds: both stores keep them exactly.
    package static let t0 = Date(timeIntervalSince1970: 1_700_000_000)

    package static func product(
        _ id: String, autoCreate: Bool = true, quota: Int? = nil, clockless: Bool = false, createdAt: Date = t0
    ) -> Product {
        Product(
            id: id, name: "name of \(id)", authType: .key, secret: "secret-of-\(id)-0123456789abcdef",
            dynamicRegistration: true, autoCreate: autoCreate, deviceQuota: quota, allowClocklessDevices: clockless,
            deviceCount: 0, createdAt: createdAt)
    }

    /// A certificate product whose CA is `authority`.
    package static func certificateProduct(_ id: String) -> Product {
        var product = product(id)
        product.authType = .certificate
        product.certificateAuthority = authority
        return product
    }

    package static func attempt(
        _ productId: String, _ deviceName: String, nonce: Int64, timestamp: Int64 = 1_700_000_000,
        expiry: Date? = Date(timeIntervalSince1970: 1_700_000_301), psk: String? = nil, now: Date = t0
    ) -> RegistrationAttempt {
        RegistrationAttempt(
            productId: productId, deviceName: deviceName, timestamp: timestamp, nonce: nonce, replayExpiry: expiry,
            credential: .key(psk: psk ?? "psk-\(deviceName)-\(nonce)"), now: now)
    }

    package static let authority = StoredCertificateAuthority(
        certificatePEM: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        sealedPrivateKey: "sealed-key-bytes", keyType: "p256", certificateValidityDays: 365)

    package static func certificate(
        _ serial: String, _ deviceName: String, productId: String = "PC", issuedAt: Date
    )
        -> DeviceCertificate
    {
        DeviceCertificate(
            serial: serial, productId: productId, deviceName: deviceName, fingerprint: "fp\(serial)",
            pem: "-----BEGIN CERTIFICATE-----\n\(serial)\n-----END CERTIFICATE-----\n", notBefore: issuedAt,
            notAfter: issuedAt.addingTimeInterval(365 * 86_400), issuedAt: issuedAt)
    }

    package static func certificateAttempt(
        _ deviceName: String, _ certificate: DeviceCertificate, nonce: Int64
    )
        -> RegistrationAttempt
    {
        RegistrationAttempt(
            productId: certificate.productId, deviceName: deviceName, timestamp: 1_700_000_000, nonce: nonce,
            replayExpiry: Date(timeIntervalSince1970: 1_700_000_301), credential: .certificate(certificate),
            now: certificate.issuedAt)
    }

    package static func issued(
        _ decision: RegistrationDecision, sourceLocation: SourceLocation = #_sourceLocation
    ) -> Device? {
        guard case .issued(let device, _) = decision else {
            Issue.record("expected a credential, got \(decision)", sourceLocation: sourceLocation)
            return nil
        }
        return device
    }

    package static func expectError(
        _ code: StoreError.Code, sourceLocation: SourceLocation = #_sourceLocation,
        _ operation: () async throws -> Void
    ) async {
        do {
            try await operation()
            Issue.record("expected StoreError.\(code), got success", sourceLocation: sourceLocation)
        } catch let error as StoreError {
            #expect(error.code == code, sourceLocation: sourceLocation)
        } catch {
            Issue.record("expected StoreError.\(code), got \(error)", sourceLocation: sourceLocation)
        }
    }

    /// The count the store keeps must equal the devices it lists.
    /// The product's device count agrees with its listed devices and, when given, is `expected`.
    package static func expectCountConsistent(
        _ store: any RegistrationStore, _ productId: String, is expected: Int? = nil,
        sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        let product = try #require(try await store.product(id: productId), sourceLocation: sourceLocation)
        let listed = try await store.devices(productId: productId, status: nil, limit: 100_000, after: nil)
        #expect(product.deviceCount == listed.count, sourceLocation: sourceLocation)
        if let expected { #expect(product.deviceCount == expected, sourceLocation: sourceLocation) }
    }
}
