package import DynRegStore
import Synchronization

/// The brakes `dynreg serve` puts on registrations, with their defaults (docs/operations.md).
package struct RegistrationLimits: Sendable, Hashable {
    /// Per client address, before anything else: generous for a factory line behind one NAT address.
    package var perAddress = RegistrationRate(perSecond: 20, burst: 200)
    /// Per product, once the signature is good; a product's own `registrationRate` replaces it.
    package var perProduct = RegistrationRate(perSecond: 200, burst: 2_000)
    /// Wrong signatures from one address for one product before it is refused for a while.
    package var lockout = LockoutPolicy()

    package init() {}
}

/// `failures` wrong signatures for one product from one address within `window` lock that address out of that
/// product for `duration`.
package struct LockoutPolicy: Sendable, Hashable {
    package var failures = 20
    package var window: Duration = .seconds(600)
    package var duration: Duration = .seconds(600)

    package init() {}

    package var isOff: Bool { failures <= 0 }
}

/// Token buckets by key (an address, a product), in memory and bounded: at `capacity` keys, buckets that have
/// refilled are forgotten (forgetting a full bucket changes nothing), and if none has, an arbitrary one is. That scan
/// runs at most once a second: otherwise a flood of new addresses would cost a scan of the table each.
final class TokenBuckets: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
        var rate: RegistrationRate

        mutating func refill(_ now: ContinuousClock.Instant) {
            let elapsed = now - updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) * 1e-18
            tokens = min(Double(rate.burst), tokens + seconds * rate.perSecond)
            updated = now
        }
    }

    private struct State {
        var buckets: [String: Bucket] = [:]
        var lastPrune: ContinuousClock.Instant?
    }

    private let state = Mutex(State())
    let capacity: Int

    init(capacity: Int = 100_000) { self.capacity = capacity }

    var count: Int { state.withLock { $0.buckets.count } }

    /// Takes a token for `key`; false when its bucket is empty.
    func take(_ key: String, rate: RegistrationRate, now: ContinuousClock.Instant = .now) -> Bool {
        if rate.isUnlimited { return true }
        return state.withLock { state in
            var bucket = state.buckets[key] ?? Bucket(tokens: Double(rate.burst), updated: now, rate: rate)
            bucket.rate = rate
            bucket.refill(now)
            let allowed = bucket.tokens >= 1
            if allowed { bucket.tokens -= 1 }
            if state.buckets[key] == nil, state.buckets.count >= capacity {
                Self.makeRoom(&state, now, capacity: capacity)
            }
            state.buckets[key] = bucket
            return allowed
        }
    }

    private static func makeRoom(_ state: inout State, _ now: ContinuousClock.Instant, capacity: Int) {
        if state.lastPrune.map({ now - $0 >= .seconds(1) }) ?? true {
            state.lastPrune = now
            state.buckets = state.buckets.filter { _, bucket in
                var bucket = bucket
                bucket.refill(now)
                return bucket.tokens < Double(bucket.rate.burst)
            }
        }
        if state.buckets.count >= capacity, let any = state.buckets.keys.first {
            state.buckets[any] = nil
        }
    }
}
