import DynRegStore
import ServiceLifecycle
import Synchronization

/// Checks the store in the background, so that `GET /health` answers from memory at the cost of a bare request,
/// and still turns 503 within `staleAfter` of the store ceasing to answer (a check that hangs never succeeds) or
/// failing (a full disk: the store's check then makes a small write).
final class HealthMonitor: Service, Sendable {
    private struct State {
        /// When the last check that succeeded finished.
        var lastSuccess: ContinuousClock.Instant?
        /// Whether the last finished check failed.
        var failing = false
    }

    private let check: @Sendable () async throws -> Void
    private let interval: Duration
    private let staleAfter: Duration
    private let state = Mutex(State())

    init(
        interval: Duration = .milliseconds(500), staleAfter: Duration = .seconds(2),
        check: @escaping @Sendable () async throws -> Void
    ) {
        self.check = check
        self.interval = interval
        self.staleAfter = staleAfter
    }

    convenience init(store: some RegistrationStore) {
        self.init { try await store.checkHealth() }
    }

    /// Whether the store answered its last check, recently enough. Before the first check has finished (the first
    /// requests after the start), the check runs inline.
    func isHealthy() async -> Bool {
        let known = state.withLock { state -> Bool? in
            guard let lastSuccess = state.lastSuccess else { return state.failing ? false : nil }
            return !state.failing && ContinuousClock.now - lastSuccess <= staleAfter
        }
        if let known { return known }
        return await runCheck()
    }

    @discardableResult
    private func runCheck() async -> Bool {
        do {
            try await check()
            state.withLock {
                $0.lastSuccess = .now
                $0.failing = false
            }
            return true
        } catch {
            state.withLock { $0.failing = true }
            return false
        }
    }

    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            await runCheck()
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: self.interval) }
        }
    }
}
