import Synchronization
import Testing

@testable import DynRegServer

@Suite("Health from a background check")
struct HealthMonitorTests {
    /// A store check that succeeds, fails, or never answers, as the test says.
    final class ScriptedCheck: Sendable {
        enum Mode { case answer, fail, hang }
        let mode = Mutex(Mode.answer)
        let calls = Atomic<Int>(0)

        func run() async throws {
            calls.add(1, ordering: .relaxed)
            switch mode.withLock({ $0 }) {
            case .answer: return
            case .fail: throw CancellationError()
            case .hang: try await Task.sleep(for: .seconds(3600))
            }
        }
    }

    /// Polls until `monitor` says `healthy`, for at most 10 s.
    func becomes(_ healthy: Bool, _ monitor: HealthMonitor) async throws -> Bool {
        for _ in 0..<200 {
            if await monitor.isHealthy() == healthy { return true }
            try await Task.sleep(for: .milliseconds(50))
        }
        return false
    }

    @Test("before its first check it checks inline; then it answers from memory")
    func inlineFirst() async throws {
        let check = ScriptedCheck()
        let monitor = HealthMonitor(interval: .milliseconds(50), staleAfter: .milliseconds(300)) {
            try await check.run()
        }
        #expect(await monitor.isHealthy())
        #expect(check.calls.load(ordering: .relaxed) == 1)
        #expect(await monitor.isHealthy())
        #expect(check.calls.load(ordering: .relaxed) == 1)
    }

    @Test("a failing store and a store that stops answering both turn it unhealthy, and recovery turns it back")
    func failAndHang() async throws {
        let check = ScriptedCheck()
        let monitor = HealthMonitor(interval: .milliseconds(50), staleAfter: .milliseconds(300)) {
            try await check.run()
        }
        let running = Task { try await monitor.run() }
        defer { running.cancel() }
        #expect(try await becomes(true, monitor))
        check.mode.withLock { $0 = .fail }
        #expect(try await becomes(false, monitor))
        check.mode.withLock { $0 = .answer }
        #expect(try await becomes(true, monitor))
        check.mode.withLock { $0 = .hang }
        #expect(try await becomes(false, monitor))
    }
}
