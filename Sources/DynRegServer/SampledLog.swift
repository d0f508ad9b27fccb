import Synchronization

/// At most one log line per `interval` for a failure that can repeat on every request: ``due()`` says when to log,
/// and how many went unlogged since the last line.
final class SampledLog: Sendable {
    private struct State {
        var last: ContinuousClock.Instant?
        var unlogged = 0
    }

    private let interval: Duration
    private let state = Mutex(State())

    init(interval: Duration) { self.interval = interval }

    /// The number of failures not logged since the last line when this one should be logged, else `nil`.
    func due() -> Int? {
        let now = ContinuousClock.now
        return state.withLock { state in
            if let last = state.last, now - last < interval {
                state.unlogged += 1
                return nil
            }
            defer {
                state.last = now
                state.unlogged = 0
            }
            return state.unlogged
        }
    }
}
