import DynRegProtocol
import DynRegStore
import Foundation
import Synchronization

/// The brakes a registration passes on its way to the store: the rate of its address, the lockout of its address
/// for its product, the rate of its product, and the product's new-device brake.
struct RegistrationGuards: Sendable {
    let limits: RegistrationLimits
    let addresses = TokenBuckets()
    let products = TokenBuckets(capacity: 10_000)
    let lockouts: SignatureLockouts
    let productLimits: ProductLimitsCache
    /// When each product's brake last wrote its audit event: one an hour, not one per refusal.
    private let brakeEvents = BrakeEvents()

    init(limits: RegistrationLimits, lockouts: SignatureLockouts, productLimits: ProductLimitsCache) {
        self.limits = limits
        self.lockouts = lockouts
        self.productLimits = productLimits
    }

    func admitAddress(_ address: String) -> Bool { addresses.take(address, rate: limits.perAddress) }

    func admitProduct(_ productId: String, _ own: ProductLimits) -> Bool {
        products.take(productId, rate: own.registrationRate ?? limits.perProduct)
    }

    /// Whether this refusal by the brake is the first of its hour for the product, and so gets an audit event.
    func brakeEventDue(_ productId: String, now: Date) -> Bool { brakeEvents.due(productId, now: now) }

    static func brakeMessage(_ perHour: Int) -> String {
        "the product's new-device brake is on: at most \(perHour) new devices an hour; known devices may still "
            + "register, and an operator can raise or lift the brake"
    }

    static let lockedOutMessage =
        "this address is locked out of the product after repeated wrong signatures; retry later"
}

private final class BrakeEvents: Sendable {
    private let last = Mutex<[String: Date]>([:])

    func due(_ productId: String, now: Date) -> Bool {
        last.withLock { last in
            if let previous = last[productId], now.timeIntervalSince(previous) < 3600 { return false }
            last[productId] = now
            return true
        }
    }
}
