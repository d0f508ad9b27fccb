import DynRegCA
import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import HTTPTypes
import Testing

@testable import DynRegServer

/// `ProductAdministration` called directly, without HTTP, over a real SQLite file in a fresh directory.
@Suite("Product administration: defaults, validation and CAs without HTTP")
struct ProductAdministrationTests {
    static func with<T>(_ body: (ProductAdministration<SQLiteStore>) async throws -> T) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dynreg-admin-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteStore(
            path: directory.appendingPathComponent("dynreg.sqlite").path, masterKey: LiveServer.masterKey)
        let masterKey = try MasterKey(encoded: String(repeating: "cd", count: 32))
        return try await withRunning(store) {
            try await body(
                ProductAdministration(store: store, authorities: CertificateAuthorities(masterKey: masterKey)))
        }
    }

    /// Runs `body` and returns the admin error code it failed with.
    static func refusal(_ body: () async throws -> Void) async -> AdminErrorCode? {
        do {
            try await body()
            return nil
        } catch let error as AdminError {
            return error.code
        } catch let error as StoreError {
            return AdminError(error).code
        } catch {
            return nil
        }
    }

    @Test("a product created from a name alone gets the documented defaults and is stored")
    func defaults() async throws {
        try await Self.with { administration in
            let product = try await administration.createProduct(ProductCreateInput(name: "meters"))
            #expect(ProductIdRules.isValid(product.id))
            #expect(ProductSecretRules.isValid(product.secret))
            #expect(product.name == "meters")
            #expect(product.authType == .key)
            #expect(product.dynamicRegistration && product.autoCreate)
            #expect(product.deviceQuota == 10_000, "a finite default quota")
            #expect(!product.allowClocklessDevices)
            #expect(product.certificateAuthority == nil)
            #expect(product.deviceCount == 0)
            #expect(try await administration.store.product(id: product.id) == product)
            #expect(try await administration.product(id: product.id) == product)
            let other = try await administration.createProduct(ProductCreateInput(name: "meters"))
            #expect(other.id != product.id && other.secret != product.secret)
        }
    }

    static let refusedInputs: [(ProductCreateInput, AdminErrorCode)] = [
        (ProductCreateInput(), .invalidName),
        (ProductCreateInput(name: "  "), .invalidName),
        (ProductCreateInput(name: String(repeating: "n", count: 201)), .invalidName),
        (ProductCreateInput(name: "p", deviceQuota: -1), .invalidQuota),
        (ProductCreateInput(name: "p", authType: .certificate, certificateValidityDays: 0), .invalidValidity),
        (ProductCreateInput(name: "p", authType: .certificate, certificateValidityDays: 36_501), .invalidValidity),
        (ProductCreateInput(name: "p", caKeyType: "p256"), .invalidAuthType),
        (ProductCreateInput(name: "p", caCertificatePem: "x", caPrivateKeyPem: "y"), .invalidAuthType),
        (ProductCreateInput(name: "p", authType: .certificate, caKeyType: "p521"), .invalidKeyType),
        (ProductCreateInput(name: "p", authType: .certificate, caCertificatePem: "x"), .invalidCertificateAuthority),
        (
            ProductCreateInput(name: "p", authType: .certificate, caCertificatePem: "x", caPrivateKeyPem: "y"),
            .invalidCertificateAuthority
        ),
    ]

    @Test("invalid products are refused with their code and nothing is stored", arguments: refusedInputs)
    func refusedProducts(input: ProductCreateInput, code: AdminErrorCode) async throws {
        try await Self.with { administration in
            #expect(await Self.refusal { _ = try await administration.createProduct(input) } == code)
            let stored = try await administration.products()
            #expect(stored.isEmpty)
        }
    }

    @Test("the boundaries themselves are accepted")
    func boundaries() async throws {
        try await Self.with { administration in
            let long = try await administration.createProduct(
                ProductCreateInput(name: String(repeating: "n", count: 200), deviceQuota: 0))
            #expect(long.deviceQuota == 0)
            let shortLived = try await administration.createProduct(
                ProductCreateInput(name: "c", authType: .certificate, certificateValidityDays: 1))
            #expect(shortLived.certificateAuthority?.certificateValidityDays == 1)
        }
    }

    @Test("a certificate product gets a sealed P-256 CA valid for 3650-day certificates; its CRL is signed by it")
    func certificateProduct() async throws {
        try await Self.with { administration in
            let product = try await administration.createProduct(ProductCreateInput(name: "c", authType: .certificate))
            let stored = try #require(product.certificateAuthority)
            #expect(stored.keyType == "p256")
            #expect(stored.certificateValidityDays == 3650)
            #expect(!stored.sealedPrivateKey.contains("PRIVATE KEY"))
            let opened = try #require(try administration.authorities.authority(for: product))
            #expect(opened.keyType == .p256)
            let pem = try await administration.caCertificate(productId: product.id)
            #expect(pem == stored.certificatePEM)
            #expect(pem.hasPrefix("-----BEGIN CERTIFICATE-----"))
            #expect(try await administration.crl(productId: product.id).hasPrefix("-----BEGIN X509 CRL-----"))

            let key = try await administration.createProduct(ProductCreateInput(name: "k"))
            #expect(await Self.refusal { _ = try await administration.caCertificate(productId: key.id) } == .notFound)
            #expect(await Self.refusal { _ = try await administration.crl(productId: key.id) } == .notFound)
            #expect(await Self.refusal { _ = try await administration.crl(productId: "NOSUCH") } == .notFound)
        }
    }

    @Test("an imported CA is kept as given, with the requested key type ignored for imports")
    func importedCA() async throws {
        try await Self.with { administration in
            let authority = try ProductCertificateAuthority.create(productId: "imported", keyType: .p384)
            let product = try await administration.createProduct(
                ProductCreateInput(
                    name: "i", authType: .certificate, certificateValidityDays: 30,
                    caCertificatePem: authority.certificatePEM, caPrivateKeyPem: authority.privateKeyPEM))
            #expect(product.certificateAuthority?.certificatePEM == authority.certificatePEM)
            #expect(product.certificateAuthority?.keyType == "p384")
            #expect(product.certificateAuthority?.certificateValidityDays == 30)
            let other = try ProductCertificateAuthority.create(productId: "other", keyType: .p256)
            let mismatched = ProductCreateInput(
                name: "m", authType: .certificate, caCertificatePem: authority.certificatePEM,
                caPrivateKeyPem: other.privateKeyPEM)
            #expect(
                await Self.refusal { _ = try await administration.createProduct(mismatched) }
                    == .invalidCertificateAuthority)
        }
    }

    @Test("updates follow the creation rules; a null quota removes the cap")
    func updates() async throws {
        try await Self.with { administration in
            let product = try await administration.createProduct(ProductCreateInput(name: "p", deviceQuota: 3))
            #expect(
                await Self.refusal { _ = try await administration.updateProduct(id: product.id, .init(name: " ")) }
                    == .invalidName)
            #expect(
                await Self.refusal {
                    _ = try await administration.updateProduct(id: product.id, .init(deviceQuota: -2))
                }
                    == .invalidQuota)
            #expect(try await administration.product(id: product.id).deviceQuota == 3)
            let renamed = try await administration.updateProduct(
                id: product.id, .init(name: "q", autoCreate: false, deviceQuota: .some(nil)))
            #expect(renamed.name == "q" && !renamed.autoCreate && renamed.deviceQuota == nil)
            let unchanged = try await administration.updateProduct(id: product.id, .init(dynamicRegistration: false))
            #expect(unchanged.name == "q" && unchanged.deviceQuota == nil && !unchanged.dynamicRegistration)
            let rotated = try await administration.rotateSecret(productId: product.id)
            #expect(rotated.secret != product.secret && ProductSecretRules.isValid(rotated.secret))
            #expect(
                await Self.refusal { _ = try await administration.updateProduct(id: "NOSUCH", .init()) } == .notFound)
            try await administration.deleteProduct(id: product.id)
            #expect(await Self.refusal { _ = try await administration.product(id: product.id) } == .notFound)
        }
    }

    @Test("devices: name rule, quota, paging limits and the status filter")
    func devices() async throws {
        try await Self.with { administration in
            let product = try await administration.createProduct(ProductCreateInput(name: "p", deviceQuota: 3))
            let id = product.id
            #expect(
                await Self.refusal { _ = try await administration.createDevice(productId: id, deviceName: "a b") }
                    == .deviceNameInvalid)
            for name in ["d1", "d2", "d3"] {
                #expect(try await administration.createDevice(productId: id, deviceName: name).status == .created)
            }
            #expect(
                await Self.refusal { _ = try await administration.createDevice(productId: id, deviceName: "d1") }
                    == .conflict)
            #expect(
                await Self.refusal { _ = try await administration.createDevice(productId: id, deviceName: "d4") }
                    == .deviceQuota)

            let first = try await administration.devices(productId: id, status: nil, limit: 0, after: nil)
            #expect(first.devices.map(\.name) == ["d1"])
            #expect(first.nextCursor == "d1")
            let rest = try await administration.devices(
                productId: id, status: nil, limit: 5000, after: first.nextCursor)
            #expect(rest.devices.map(\.name) == ["d2", "d3"])
            #expect(rest.nextCursor == nil)
            #expect(ProductAdministration<SQLiteStore>.pageSize(nil) == 100)
            #expect(ProductAdministration<SQLiteStore>.pageSize(5000) == 1000)
            #expect(
                await Self.refusal {
                    _ = try await administration.devices(productId: id, status: "bogus", limit: nil, after: nil)
                } == .invalidStatus)

            let activated = try await administration.activateDevice(productId: id, deviceName: "d2")
            #expect(activated.status == .activated)
            let filtered = try await administration.devices(productId: id, status: "activated", limit: nil, after: nil)
            #expect(filtered.devices.map(\.name) == ["d2"])
            #expect(try await administration.resetDevice(productId: id, deviceName: "d2").status == .created)
            #expect(try await administration.certificates(productId: id, deviceName: "d2").certificates.isEmpty)
            try await administration.deleteDevice(productId: id, deviceName: "d2")
            do {
                _ = try await administration.device(productId: id, deviceName: "d2")
                Issue.record("a deleted device was found")
            } catch let error as AdminError {
                #expect(error == AdminError(.notFound, "device d2 does not exist"))
            }
            #expect(try await administration.events(productId: id, limit: nil).isEmpty)
            #expect(
                await Self.refusal { _ = try await administration.events(productId: "NOSUCH", limit: nil) } == .notFound
            )
        }
    }

    static let storeErrors: [(StoreError.Code, AdminErrorCode)] = [
        (.productNotFound, .notFound), (.deviceNotFound, .notFound), (.certificateNotFound, .notFound),
        (.deviceExists, .conflict), (.productExists, .conflict), (.quotaExceeded, .deviceQuota),
        (.invalidInput, .invalidInput), (.unavailable, .unavailable),
    ]

    @Test("each store error has one admin code and keeps its message", arguments: storeErrors)
    func storeErrorTranslation(code: StoreError.Code, expected: AdminErrorCode) {
        let error = AdminError(StoreError(code, "the message"))
        #expect(error.code == expected)
        #expect(error.message == "the message")
    }

    @Test("every admin error code is unique and documented in docs/errors.md with its status")
    func codesAreDocumented() throws {
        let codes = AdminErrorCode.all.map(\.code)
        #expect(Set(codes).count == codes.count)
        let docs = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/errors.md")
        let text = try String(contentsOf: docs, encoding: .utf8)
        let section = try #require(text.range(of: "## Admin API errors")).upperBound
        let admin = text[section...]
        for code in AdminErrorCode.all {
            #expect(admin.contains("| `\(code.code)` | \(code.status.code) |"), "\(code.code) is not in docs/errors.md")
        }
    }

    @Test("a CRL leaves out revoked certificates that expired more than a CRL period (7 days) ago")
    func crlPrunesLongExpiredCertificates() async throws {
        let now = Date()
        let (authorities, product) = try Self.certificateProduct("PRUNE00001")
        let crl = try await authorities.crl(
            for: product,
            revoked: [
                Self.revoked("0a0a0a0a", notAfter: now.addingTimeInterval(-8 * 86_400), now: now),
                Self.revoked("0b0b0b0b", notAfter: now.addingTimeInterval(-6 * 86_400), now: now),
                Self.revoked("0c0c0c0c", notAfter: now.addingTimeInterval(86_400), now: now),
            ], now: now)
        let text = try await CertificateTests.openssl(["crl", "-noout", "-text"], input: crl)
        #expect(text.status == 0, "\(text.output)")
        #expect(!text.output.contains("0A0A0A0A"), "pruned: \(text.output)")
        #expect(text.output.contains("0B0B0B0B") && text.output.contains("0C0C0C0C"), "\(text.output)")
    }

    @Test("a CRL is signed again only when its entries change or it is a day old; otherwise the same bytes")
    func crlIsCachedUntilItsRevocationsChange() async throws {
        let now = Date()
        let (authorities, product) = try Self.certificateProduct("CACHE00001")
        let one = [Self.revoked("0d0d0d0d", notAfter: now.addingTimeInterval(86_400), now: now)]
        let first = try await authorities.crl(for: product, revoked: one, now: now)
        // Seconds later: the same bytes, though a new signature would carry a new number and time.
        #expect(try await authorities.crl(for: product, revoked: one, now: now.addingTimeInterval(5)) == first)
        let two = one + [Self.revoked("0e0e0e0e", notAfter: now.addingTimeInterval(86_400), now: now)]
        let changed = try await authorities.crl(for: product, revoked: two, now: now.addingTimeInterval(10))
        #expect(changed != first)
        let text = try await CertificateTests.openssl(["crl", "-noout", "-text"], input: changed)
        #expect(text.output.contains("0E0E0E0E"), "\(text.output)")
        let dayLater = try await authorities.crl(for: product, revoked: two, now: now.addingTimeInterval(86_500))
        #expect(dayLater != changed)
    }

    static func certificateProduct(_ id: String) throws -> (CertificateAuthorities, Product) {
        let authorities = CertificateAuthorities(masterKey: TestServer.masterKey)
        var product = DemoProduct.make()
        product.id = id
        product.authType = .certificate
        product.certificateAuthority = try authorities.stored(
            ProductCertificateAuthority.create(productId: id), productId: id, validityDays: 365)
        return (authorities, product)
    }

    static func revoked(_ serial: String, notAfter: Date, now: Date) -> DeviceCertificate {
        DeviceCertificate(
            serial: serial, productId: "P", deviceName: serial, fingerprint: serial, pem: "",
            notBefore: notAfter.addingTimeInterval(-86_400), notAfter: notAfter,
            issuedAt: notAfter.addingTimeInterval(-86_400), revokedAt: now.addingTimeInterval(-60))
    }
}
