import DynRegProtocol
import DynRegStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Locks an address out of one product after repeated wrong signatures (``LockoutPolicy``).
///
/// Failures are counted here, exactly, for this instance's requests, and by every instance together in the
/// per-minute refusal rows (``RefusalTally``), which ``run()`` reads every few seconds: on several instances an
/// address is locked once their failures add up, a few seconds and at most a minute's rounding late. Lockouts are
/// kept in the store, so every instance refuses a locked address within a refresh, and an operator's clear reaches
/// them all the same way. Checking a request is a dictionary lookup.
final class SignatureLockouts: Service, Sendable {
    private struct Key: Hashable {
        var productId: String
        var address: String
    }

    private struct State {
        /// Wrong signatures per minute, of this instance, since the last lockout or clear.
        var failures: [Key: [Int64: Int]] = [:]
        /// Until when each locked pair is refused.
        var locked: [Key: Date] = [:]
        /// When each pair's last lockout ended (or was cleared): failures before it no longer count.
        var ended: [Key: Date] = [:]
        /// When stale failure counts were last dropped.
        var lastPrune: Date?
    }

    let policy: LockoutPolicy
    private let store: any RegistrationStore
    private let metrics: ServerMetrics
    private let logger: Logger
    private let clock: @Sendable () -> Date
    private let state = Mutex(State())
    /// Pairs tracked at once; past it, the oldest failure counts are dropped (never lockouts).
    static let capacity = 10_000
    static let refreshInterval: Duration = .seconds(5)

    init(
        policy: LockoutPolicy, store: any RegistrationStore, metrics: ServerMetrics, logger: Logger,
        clock: @escaping @Sendable () -> Date = Date.init
    ) {
        self.policy = policy
        self.store = store
        self.metrics = metrics
        self.logger = logger
        self.clock = clock
    }

    private var window: TimeInterval { TimeInterval(policy.window.components.seconds) }
    private var duration: TimeInterval { TimeInterval(policy.duration.components.seconds) }

    func isLocked(productId: String, address: String) -> Bool {
        guard !policy.isOff else { return false }
        let now = clock()
        return state.withLock { state in
            guard let until = state.locked[Key(productId: productId, address: address)] else { return false }
            return until > now
        }
    }

    /// One wrong signature; when it is the one that locks the address, the lockout is written and audited.
    func recordFailure(productId: String, address: String) async {
        guard !policy.isOff else { return }
        let now = clock()
        let key = Key(productId: productId, address: address)
        let minute = Int64(now.timeIntervalSince1970) / 60
        let oldest = Int64(now.timeIntervalSince1970 - window) / 60
        let failures = state.withLock { state -> Int? in
            var minutes = state.failures[key] ?? [:]
            minutes = minutes.filter { $0.key >= oldest }
            minutes[minute, default: 0] += 1
            let total = minutes.values.reduce(0, +)
            guard total >= policy.failures else {
                if state.failures[key] == nil, state.failures.count >= Self.capacity {
                    // The scan for stale counts at most once a minute; between, an arbitrary count makes room, so
                    // a flood of new addresses never costs a scan each.
                    if state.lastPrune.map({ now.timeIntervalSince($0) >= 60 }) ?? true {
                        state.lastPrune = now
                        state.failures = state.failures.filter { $0.value.keys.contains { $0 >= oldest } }
                    }
                    if state.failures.count >= Self.capacity, let any = state.failures.keys.first {
                        state.failures[any] = nil
                    }
                }
                state.failures[key] = minutes
                return nil
            }
            state.failures[key] = nil
            state.locked[key] = now.addingTimeInterval(duration)
            return total
        }
        if let failures { await lock(key, failures: failures, now: now) }
    }

    private func lock(_ key: Key, failures: Int, now: Date) async {
        let lockout = Lockout(
            productId: key.productId, remoteAddress: key.address, failures: failures, lockedAt: now,
            lockedUntil: now.addingTimeInterval(duration))
        metrics.lockoutStarted()
        logger.warning(
            "an address is locked out of a product after repeated wrong signatures",
            metadata: [
                "dynreg.product.id": "\(key.productId)", "dynreg.remote": "\(key.address)",
                "dynreg.failures": "\(failures)",
            ])
        do {
            try await store.recordLockout(lockout)
            // One event per lockout, not one per refused request.
            try await store.recordEvent(
                RegistrationEvent(
                    time: now, productId: key.productId, deviceName: "", outcome: Self.lockoutOutcome,
                    remoteAddress: AuditField.bounded(key.address), endpoint: "lockout"))
        } catch {
            metrics.storeError("record_lockout")
        }
    }

    /// The audit outcome of a lockout's start; the requests it refuses are counted as `RequestLimitExceeded`.
    static let lockoutOutcome = "RequestLimitExceeded.Lockout"

    /// An operator ended the lockout: this instance forgets it at once, the others at their next refresh.
    func cleared(productId: String, address: String) {
        let key = Key(productId: productId, address: address)
        let now = clock()
        state.withLock { state in
            state.locked[key] = nil
            state.failures[key] = nil
            state.ended[key] = now
        }
    }

    /// Reads the lockouts of every instance, and locks pairs whose failures add up across instances.
    func refresh() async throws {
        guard !policy.isOff else { return }
        let now = clock()
        let since = now.addingTimeInterval(-window)
        let recent = try await store.lockouts(productId: nil, endingAfter: since)
        var locked: [Key: Date] = [:]
        var ended: [Key: Date] = [:]
        for lockout in recent {
            let key = Key(productId: lockout.productId, address: lockout.remoteAddress)
            if lockout.lockedUntil > now { locked[key] = lockout.lockedUntil } else { ended[key] = lockout.lockedUntil }
        }
        let totals = try await store.refusalTotals(
            outcome: RegistrationErrorCode.signatureFailure.code, since: since, atLeast: policy.failures)
        var newlyLocked: [(Key, Int)] = []
        state.withLock { state in
            for (key, end) in state.ended where end > (ended[key] ?? .distantPast) { ended[key] = end }
            // Locked here since the read began, and perhaps not written yet: kept.
            let fresh = now.addingTimeInterval(duration - 2 * Double(Self.refreshInterval.components.seconds))
            for (key, until) in state.locked where until > fresh && locked[key] == nil { locked[key] = until }
            state.locked = locked
            state.ended = ended.filter { $0.value > since }
            for total in totals {
                let key = Key(productId: total.productId, address: total.remoteAddress)
                guard locked[key] == nil else { continue }
                // Counted minutes that began before the last lockout ended belong to it.
                if let end = state.ended[key], total.minute < end { continue }
                state.locked[key] = now.addingTimeInterval(duration)
                state.failures[key] = nil
                newlyLocked.append((key, total.count))
            }
        }
        for (key, failures) in newlyLocked { await lock(key, failures: failures, now: now) }
    }

    func run() async throws {
        // A service that returns early ends the group: off, it waits for shutdown like the others.
        guard !policy.isOff else { return try await gracefulShutdown() }
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            // Woken by shutdown, not only by the timer: a stop does not wait out the interval.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: Self.refreshInterval) }
            do {
                try await refresh()
            } catch {
                metrics.storeError("refresh_lockouts")
            }
        }
    }
}
