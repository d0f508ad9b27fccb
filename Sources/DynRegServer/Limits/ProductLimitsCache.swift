import DynRegStore
import Synchronization

/// Each product's ``ProductLimits``, read from the store at most every few seconds: a change through this instance
/// applies at once, through another within ``maximumAge``.
final class ProductLimitsCache: Sendable {
    static let maximumAge: Duration = .seconds(5)
    private let entries = Mutex<[String: (limits: ProductLimits, read: ContinuousClock.Instant)]>([:])
    private let store: any RegistrationStore

    init(store: any RegistrationStore) { self.store = store }

    func limits(productId: String) async throws -> ProductLimits {
        let now = ContinuousClock.now
        if let entry = entries.withLock({ $0[productId] }), now - entry.read < Self.maximumAge { return entry.limits }
        let limits = try await store.limits(productId: productId)
        entries.withLock { entries in
            // Products are few; a cache of every one that registers stays small.
            if entries.count >= 100_000 { entries.removeAll() }
            entries[productId] = (limits, now)
        }
        return limits
    }

    func forget(productId: String) { _ = entries.withLock { $0.removeValue(forKey: productId) } }
}
