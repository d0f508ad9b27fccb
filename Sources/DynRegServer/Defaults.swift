package import DynRegStore
import Foundation

/// The product created on a fresh store so a newcomer sees the whole flow with one command.
package enum DemoProduct {
    package static func make() -> Product {
        Product(
            id: Secrets.productId(), name: "demo", authType: .key, secret: Secrets.productSecret(),
            dynamicRegistration: true, autoCreate: true, deviceQuota: 1000, allowClocklessDevices: false,
            deviceCount: 0, createdAt: Date())
    }
}

package enum AdminTokenGenerator {
    package static func make() -> String { Secrets.adminToken() }
}
