import DynRegCA
import DynRegClient
import DynRegPostgres
import DynRegProtocol
import DynRegServer
import DynRegStore
import Foundation
import Testing

private struct Wrapper<T> { var value: T }

/// Every type that holds a secret, printed every way Swift prints a value: the secret never shows, the rest does.
@Suite("Redaction")
struct RedactionTests {
    static let secret = "SECRET-product-0123456789"
    static let psk = "UFNLLXNlY3JldC1wc2stMTIz"
    static let token = "ADMIN-token-abcdefghijklmnop"
    static let keyPEM = "-----BEGIN PRIVATE KEY-----\nS0VZLWJ5dGVz\n-----END PRIVATE KEY-----"
    static let now = Date(timeIntervalSince1970: 1_700_000_000)

    /// `"\(x)"`, `String(describing:)`, `String(reflecting:)` and `dump`, of the value and of the value in a struct.
    static func renderings(_ value: some Any) -> [String] {
        var dumped = ""
        dump(value, to: &dumped)
        var dumpedWrapper = ""
        dump(Wrapper(value: value), to: &dumpedWrapper)
        return [
            "\(value)", String(describing: value), String(reflecting: value), dumped,
            String(describing: Wrapper(value: value)), dumpedWrapper, "\([value])", "\(Optional(value) as Any)",
        ]
    }

    static func expectHidden(
        _ value: some Any, secrets: [String], shows visible: [String] = [], marked: Bool = true,
        sourceLocation: SourceLocation = #_sourceLocation
    ) {
        for (index, text) in renderings(value).enumerated() {
            for secret in secrets {
                #expect(!text.contains(secret), "rendering \(index) shows a secret", sourceLocation: sourceLocation)
            }
            if marked {
                #expect(text.contains("redacted"), "rendering \(index): \(text)", sourceLocation: sourceLocation)
            }
        }
        for field in visible {
            #expect(
                String(describing: value).contains(field), "\(value) lacks \(field)", sourceLocation: sourceLocation)
        }
    }

    static let product = Product(
        id: "PRODUCT01", name: "cams", authType: .certificate, secret: secret, dynamicRegistration: true,
        autoCreate: true, deviceQuota: 10, allowClocklessDevices: false, deviceCount: 1, createdAt: now,
        certificateAuthority: StoredCertificateAuthority(
            certificatePEM: "CA-PEM", sealedPrivateKey: "v1:SEALED-key", keyType: "p256", certificateValidityDays: 30))

    static let device = Device(
        productId: "PRODUCT01", name: "cam-01", status: .registered, psk: psk, createdAt: now, registeredAt: now,
        activatedAt: nil, registrationCount: 1)

    @Test("protocol values: the psk, the private key and the MQTT password")
    func protocolValues() throws {
        Self.expectHidden(DeviceCredential.key(psk: Self.psk), secrets: [Self.psk], shows: ["key"])
        Self.expectHidden(
            DeviceCredential.certificate(clientCert: "CERT", clientKey: Self.keyPEM), secrets: [Self.keyPEM, "S0VZ"],
            shows: ["certificate"])
        let mqtt = try MQTTCredentials.derive(productId: "PRODUCT01", deviceName: "cam-01", psk: Self.psk, expiry: 1)
        Self.expectHidden(mqtt, secrets: [mqtt.password, String(mqtt.password.prefix(16))], shows: [mqtt.username])
        let registered = RegisteredCredential(
            productId: "PRODUCT01", deviceName: "cam-01", credential: .key(psk: Self.psk))
        Self.expectHidden(registered, secrets: [Self.psk], shows: ["cam-01"])
    }

    @Test("store values: the product secret, the psk and the sealed CA key")
    func storeValues() {
        Self.expectHidden(Self.product, secrets: [Self.secret, "SEALED"], shows: ["PRODUCT01", "cams", "CA-PEM"])
        Self.expectHidden(Self.product.certificateAuthority!, secrets: ["SEALED"], shows: ["p256"])
        Self.expectHidden(Self.device, secrets: [Self.psk], shows: ["cam-01", "registered"])
        Self.expectHidden(IssuedCredential.key(psk: Self.psk), secrets: [Self.psk])
        let attempt = RegistrationAttempt(
            productId: "PRODUCT01", deviceName: "cam-01", timestamp: 1, nonce: 2, replayExpiry: nil,
            credential: .key(psk: Self.psk), now: Self.now)
        Self.expectHidden(attempt, secrets: [Self.psk])
        Self.expectHidden(RegistrationDecision.issued(Self.device, created: true), secrets: [Self.psk])
        // A device without a psk says so rather than hiding nothing.
        var fresh = Self.device
        fresh.psk = nil
        #expect(String(describing: fresh).contains("psk: nil"))
    }

    @Test("server values: the admin and broker tokens, the master key and a CA private key")
    func serverValues() throws {
        let (masterKey, encoded) = MasterKey.generate()
        Self.expectHidden(masterKey, secrets: [encoded])
        let brokerToken = "broker-token-that-must-not-show-0123456789"
        let configuration = ServerConfiguration(adminToken: Self.token, brokerToken: brokerToken, masterKey: masterKey)
        Self.expectHidden(configuration, secrets: [Self.token, brokerToken, encoded], shows: ["127.0.0.1", "8080"])
        let authority = try ProductCertificateAuthority.create(productId: "PRODUCT01")
        let keyBody = authority.privateKeyPEM.split(separator: "\n").dropFirst().first.map(String.init) ?? "?"
        Self.expectHidden(authority, secrets: [authority.privateKeyPEM, keyBody], shows: ["PRODUCT01"])
    }

    @Test("database URL: the password")
    func databaseURL() throws {
        let configuration = try PostgresStore.Configuration(url: "postgres://dynreg:DB-pass%40word@db.example:6543/iot")
        #expect(configuration.password?.hasPrefix("DB-pass") == true)
        Self.expectHidden(configuration, secrets: ["DB-pass"], shows: ["dynreg@db.example:6543/iot"], marked: false)
        #expect(String(reflecting: configuration).contains("DB-pass") == false)
        var dumped = ""
        dump(configuration, to: &dumped)
        #expect(dumped.contains("<redacted>"), "\(dumped)")
        let none = try PostgresStore.Configuration(url: "postgres://dynreg@localhost/iot")
        #expect(String(describing: none) == "postgres://dynreg@localhost:5432/iot?sslmode=disable")
    }
}
