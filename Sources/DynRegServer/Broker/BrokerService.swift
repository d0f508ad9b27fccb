import Crypto
import DynRegProtocol
package import DynRegStore
import Foundation
package import Logging

/// What brokers ask on a device's behalf: may it log in, and may it use this topic. Independent of HTTP and of
/// the broker's dialect (EMQX, RabbitMQ); every answer about topics comes from `TopicRules`.
package struct BrokerService<Store: RegistrationStore>: Sendable {
    package let store: Store
    /// `--max-login-lifetime`: a username whose expiry is further away than this is refused.
    let maxLoginLifetime: Duration?
    let clock: @Sendable () -> Date
    let metrics: ServerMetrics

    init(
        store: Store, maxLoginLifetime: Duration? = nil, metrics: ServerMetrics = ServerMetrics(),
        clock: @escaping @Sendable () -> Date = Date.init
    ) {
        self.store = store
        self.metrics = metrics
        self.maxLoginLifetime = maxLoginLifetime
        self.clock = clock
    }

    /// A device a broker let in.
    package struct Login: Sendable {
        package var product: Product
        package var deviceName: String
        /// When the login stops being valid (the MQTT username's expiry), Unix seconds; `nil` for none.
        package var expiresAt: Int64?

        package var clientId: String { product.id + deviceName }
    }

    /// A key device's MQTT credentials (PROTOCOL.md §4). `clientId`, when the broker sends it, must be the one the
    /// username names. The first success activates the device.
    package func passwordLogin(clientId: String?, username: String, password: String, logger: Logger) async -> Login? {
        guard let parsed = MQTTUsername(username), clientId == nil || clientId == parsed.clientId else { return nil }
        let now = Int64(clock().timeIntervalSince1970)
        guard parsed.expiry >= now else { return nil }
        // One MQTT password must not work for ever; off by default, as some SDKs send far-future expiries.
        if let maxLoginLifetime, parsed.expiry - now > maxLoginLifetime.components.seconds { return nil }
        do {
            guard let (product, device) = try await device(clientId: parsed.clientId), let psk = device.psk,
                MQTTCredentials.verify(username: username, password: password, psk: psk)
            else { return nil }
            try await activate(product, device, logger: logger)
            // Some SDKs send a far-future expiry: past 2100 it is no expiry at all.
            let expiresAt = parsed.expiry < 4_102_444_800 ? parsed.expiry : nil
            return Login(product: product, deviceName: device.name, expiresAt: expiresAt)
        } catch {
            metrics.storeError("broker_login")
            logger.error("broker login failed in the store")
            return nil
        }
    }

    /// A certificate device: the broker passes the peer certificate it verified (PEM) or its SHA-256 fingerprint.
    package func certificateLogin(
        clientId: String, certificatePEM: String?, fingerprint: String?, logger: Logger
    ) async -> Login? {
        var wanted: String
        if let certificatePEM {
            guard let der = pemBody(certificatePEM) else { return nil }
            wanted = Hex.lowercase(SHA256.hash(data: der))
        } else if let fingerprint {
            wanted = fingerprint.lowercased().filter { $0 != ":" }
        } else {
            return nil
        }
        do {
            let now = clock()
            guard let stored = try await store.certificate(fingerprint: wanted), Self.isValid(stored, now: now),
                stored.productId + stored.deviceName == clientId,
                let (product, device) = try await device(clientId: clientId), product.id == stored.productId
            else { return nil }
            try await activate(product, device, logger: logger)
            return Login(
                product: product, deviceName: device.name, expiresAt: Int64(stored.notAfter.timeIntervalSince1970))
        } catch {
            metrics.storeError("broker_login")
            logger.error("certificate login failed in the store")
            return nil
        }
    }

    /// A login a broker made with a certificate it verified itself, naming the device by the certificate's common
    /// name (RabbitMQ's `ssl_cert_login`): allowed while the device holds a valid, unrevoked certificate.
    package func certificateHolderLogin(clientId: String, logger: Logger) async -> Login? {
        do {
            let now = clock()
            guard let (product, device) = try await device(clientId: clientId), product.authType == .certificate,
                try await store.certificates(productId: product.id, deviceName: device.name)
                    .contains(where: { Self.isValid($0, now: now) })
            else { return nil }
            try await activate(product, device, logger: logger)
            return Login(product: product, deviceName: device.name, expiresAt: nil)
        } catch {
            metrics.storeError("broker_login")
            logger.error("certificate login failed in the store")
            return nil
        }
    }

    /// Whether the device `clientId` names may `action` on `topic` (a routing key when `separator` is `.`).
    package func allows(
        _ action: TopicAction, _ topic: String, clientId: String, separator: Character = "/"
    ) async
        -> Bool
    {
        guard let (product, device) = try? await device(clientId: clientId) else { return false }
        return TopicRules.allows(
            action, topic, policy: product.topicPolicy, productId: product.id, deviceName: device.name,
            separator: separator)
    }

    /// The product and device a client id (product id + device name) names, if both exist.
    ///
    /// Every product id dynreg makes is ten characters (as Tencent's are), so the split is known: one product
    /// lookup (cached) and one device lookup, whatever the client id, never a scan of the products. An
    /// unauthenticated broker call costs the same with one product or ten thousand.
    package func device(clientId: String) async throws -> (Product, Device)? {
        let idLength = Secrets.productIdLength
        guard clientId.utf8.count > idLength, clientId.utf8.count <= idLength + DeviceNameRules.maximumLength else {
            return nil
        }
        let productId = String(clientId.prefix(idLength))
        guard productId.utf8.count == idLength, let product = try await store.productForAdmission(id: productId)
        else { return nil }
        let name = String(clientId.dropFirst(idLength))
        guard let device = try await store.deviceForLogin(productId: product.id, deviceName: name) else { return nil }
        return (product, device)
    }

    private func activate(_ product: Product, _ device: Device, logger: Logger) async throws {
        guard device.status != .activated else { return }
        _ = try await store.activateDevice(productId: product.id, deviceName: device.name, now: clock())
        logger.info("device activated", metadata: ["dynreg.product.id": "\(product.id)"])
    }

    private static func isValid(_ certificate: DeviceCertificate, now: Date) -> Bool {
        certificate.revokedAt == nil && certificate.notBefore <= now && now <= certificate.notAfter
    }
}
