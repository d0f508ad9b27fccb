/// When operations waiting for a pooled connection give up: one per store, a pure state machine that the store's
/// `run()` ticks and whose answers it carries out, so its rules are tested without a database (LeaseWatchdogTests).
///
/// The rule: while the database is down, postgres-nio's pool retries connections for about a minute and leases
/// wait for it. An operation instead fails once it has waited `timeout` and no operation got a connection for
/// `timeout` either. A busy pool, still handing out connections, is waited for.
///
/// `Waiter` is what the store needs to answer a waiting operation (a closure in the store, a number in tests).
struct LeaseWatchdog<Waiter> {
    typealias Instant = ContinuousClock.Instant

    struct OperationID: Hashable, Sendable {
        fileprivate var value: UInt64
    }

    private enum Phase {
        /// `run()` has not started: operations wait for the pool to start, and nothing times out yet.
        case idle
        case running
        /// `run()` returned: new operations fail at once.
        case stopped
    }

    let timeout: Duration
    private var phase = Phase.idle
    private var waiting: [UInt64: (since: Instant, waiter: Waiter)] = [:]
    /// When an operation last got a connection (or the pool started).
    private var lastLease: Instant
    private var nextID: UInt64 = 0

    init(timeout: Duration, now: Instant) {
        self.timeout = timeout
        self.lastLease = now
    }

    /// A new operation will wait for a connection; `nil` if the store has stopped.
    mutating func begin(_ waiter: Waiter, now: Instant) -> OperationID? {
        if case .stopped = phase { return nil }
        nextID += 1
        waiting[nextID] = (now, waiter)
        return OperationID(value: nextID)
    }

    /// The operation got a connection, which proves the pool is alive. `false` if the watchdog already answered
    /// for it (the operation's caller has gone, so it must not run its statements).
    mutating func leased(_ id: OperationID, now: Instant) -> Bool {
        lastLease = now
        return waiting.removeValue(forKey: id.value) != nil
    }

    /// The operation ended before it got a connection (it failed or was cancelled).
    mutating func ended(_ id: OperationID) {
        waiting.removeValue(forKey: id.value)
    }

    struct Tick {
        /// Operations to fail with "no database connection within `timeout`".
        var expired: [Waiter]
        /// When to tick next.
        var next: Instant
    }

    /// `run()` started: the pool gets `timeout` to hand out its first connection.
    mutating func start(now: Instant) {
        guard case .idle = phase else { return }
        phase = .running
        lastLease = now
    }

    mutating func tick(now: Instant) -> Tick {
        guard case .running = phase else { return Tick(expired: [], next: now + timeout) }
        var expired: [Waiter] = []
        var next = now + timeout
        for (id, operation) in waiting {
            let deadline = max(operation.since, lastLease) + timeout
            if deadline <= now {
                expired.append(operation.waiter)
                waiting.removeValue(forKey: id)
            } else {
                next = min(next, deadline)
            }
        }
        return Tick(expired: expired, next: next)
    }

    /// `run()` returned: every waiting operation fails, and so does every later one.
    mutating func stop() -> [Waiter] {
        phase = .stopped
        defer { waiting.removeAll() }
        return waiting.values.map(\.waiter)
    }
}
