/// One pass over every secret a store keeps, rewriting each value: the migration that seals what a previous release
/// kept in clear, and a master key rotation. Both stores walk their rows the same way (products, then devices with a
/// psk, by primary key, ``pageSize`` at a time, in one transaction) and ask this what each value becomes.
package struct SecretRewrite: Sendable {
    private enum Mode: Sendable {
        case seal(MasterKey)
        case rotate(from: MasterKey, to: MasterKey)
    }

    private let mode: Mode

    /// Seals clear product secrets and psks under `key`, after checking that `key` opens the CA keys already
    /// sealed: sealing the secrets under another key than the CA keys' would leave no key that opens both.
    package static func sealing(under key: MasterKey) -> SecretRewrite { SecretRewrite(mode: .seal(key)) }

    /// Opens every sealed value with `old` and seals it again under `new`.
    package static func rotation(from old: MasterKey, to new: MasterKey) -> SecretRewrite {
        SecretRewrite(mode: .rotate(from: old, to: new))
    }

    /// Devices read and written per statement.
    package static let pageSize = 1000

    /// The CA key to store instead of `stored`; `nil` keeps it.
    package func caKey(_ stored: String, productId: String) throws -> String? {
        switch mode {
        case .seal(let key):
            _ = try key.open(stored, for: .caKey(productId: productId))
            return nil
        case .rotate:
            return try rewrite(stored, .caKey(productId: productId))
        }
    }

    package func secret(_ stored: String, productId: String) throws -> String {
        try rewrite(stored, .productSecret(productId: productId))
    }

    package func psk(_ stored: String, productId: String, deviceName: String) throws -> String {
        try rewrite(stored, .psk(productId: productId, deviceName: deviceName))
    }

    private func rewrite(_ stored: String, _ field: SealedField) throws -> String {
        switch mode {
        case .seal(let key): return try key.seal(stored, for: field)
        case .rotate(let old, let new): return try new.seal(old.open(stored, for: field), for: field)
        }
    }
}

/// How far a ``SecretRewrite`` pass has come; reported after the products and after each page of devices.
package struct SecretRewriteProgress: Sendable, Hashable {
    package var products: Int
    package var devices: Int
    /// Devices with a psk when the pass began.
    package var deviceTotal: Int

    package init(products: Int = 0, devices: Int = 0, deviceTotal: Int = 0) {
        self.products = products
        self.devices = devices
        self.deviceTotal = deviceTotal
    }
}
