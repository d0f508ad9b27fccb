package import Foundation
import Synchronization

/// Failed admin-token attempts per client address: after `limit` failures within `window`, the address is refused
/// for `lockout` (HTTP 429) whatever it sends, so guessing runs at `limit` tries per window instead of thousands a
/// second. A pure value: ``AdminLoginThrottle`` holds it behind a lock.
package struct FailedLogins: Sendable {
    /// Ten failures a minute lock an address for a minute; change a copy to try others.
    package struct Policy: Sendable, Hashable {
        package var limit = 10
        package var window: TimeInterval = 60
        package var lockout: TimeInterval = 60
        /// Addresses remembered at once; the table never grows past it, whatever the addresses.
        package var capacity = 10_000

        package init() {}
    }

    /// What the caller should do about one failure.
    package struct Verdict: Sendable, Hashable {
        /// The first failure of a window, or the one that locks the address: log it (the rest are counted only).
        package var log: Bool
        /// Set when this failure locked the address.
        package var lockedUntil: Date?

        package init(log: Bool, lockedUntil: Date?) {
            self.log = log
            self.lockedUntil = lockedUntil
        }
    }

    private struct Entry: Sendable {
        var windowStart: Date
        var failures: Int
        var lockedUntil: Date?
    }

    package let policy: Policy
    private var entries: [String: Entry] = [:]

    package init(policy: Policy = Policy()) { self.policy = policy }

    package var addressCount: Int { entries.count }

    /// Seconds the address stays refused, or `nil` when it may try.
    package func lockRemaining(_ address: String, now: Date) -> TimeInterval? {
        guard let until = entries[address]?.lockedUntil, until > now else { return nil }
        return until.timeIntervalSince(now)
    }

    package mutating func recordFailure(_ address: String, now: Date) -> Verdict {
        var entry = entries[address] ?? Entry(windowStart: now, failures: 0)
        if now.timeIntervalSince(entry.windowStart) >= policy.window, entry.lockedUntil.map({ $0 <= now }) ?? true {
            entry = Entry(windowStart: now, failures: 0)
        }
        entry.failures += 1
        var verdict = Verdict(log: entry.failures == 1, lockedUntil: nil)
        if entry.failures == policy.limit {
            let until = now.addingTimeInterval(policy.lockout)
            entry.lockedUntil = until
            verdict = Verdict(log: true, lockedUntil: until)
        }
        if entries[address] == nil, entries.count >= policy.capacity { makeRoom(now: now) }
        entries[address] = entry
        return verdict
    }

    /// Forgets what has expired; when everything is fresh, the oldest windows go (an attacker with many addresses
    /// gets no more than `limit` tries from each in any case).
    /// Rare (only when the table is full), and linear in its size.
    private mutating func makeRoom(now: Date) {
        entries = entries.filter { _, entry in
            now.timeIntervalSince(entry.windowStart) < policy.window || (entry.lockedUntil.map { $0 > now } ?? false)
        }
        guard entries.count >= policy.capacity else { return }
        // Locked addresses go last: flooding the table from many addresses must not lift a lock.
        let byAge = entries.sorted { lhs, rhs in
            let (lhsLocked, rhsLocked) = (lhs.value.lockedUntil != nil, rhs.value.lockedUntil != nil)
            return lhsLocked == rhsLocked ? lhs.value.windowStart < rhs.value.windowStart : !lhsLocked
        }
        for (address, _) in byAge.prefix(policy.capacity / 10 + 1) { entries[address] = nil }
    }
}

/// ``FailedLogins`` shared by the admin routes of one server.
package final class AdminLoginThrottle: Sendable {
    private let state: Mutex<FailedLogins>

    package init(policy: FailedLogins.Policy = FailedLogins.Policy()) { state = Mutex(FailedLogins(policy: policy)) }

    func lockRemaining(_ address: String, now: Date = Date()) -> TimeInterval? {
        state.withLock { $0.lockRemaining(address, now: now) }
    }

    func recordFailure(_ address: String, now: Date = Date()) -> FailedLogins.Verdict {
        state.withLock { $0.recordFailure(address, now: now) }
    }
}
