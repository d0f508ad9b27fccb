import Testing

@testable import DynRegPostgres

/// The lease watchdog's rules, without a database or a clock: instants are made up.
@Suite struct LeaseWatchdogTests {
    let t0 = ContinuousClock.now
    let timeout = Duration.seconds(5)

    func running() -> LeaseWatchdog<Int> {
        var watchdog = LeaseWatchdog<Int>(timeout: timeout, now: t0)
        watchdog.start(now: t0)
        return watchdog
    }

    func at(_ seconds: Int) -> ContinuousClock.Instant { t0 + .seconds(seconds) }

    @Test func aWaitingOperationFailsOnceNobodyGotAConnectionForTheTimeout() {
        var watchdog = running()
        let id = watchdog.begin(1, now: t0)
        #expect(id != nil)
        let early = watchdog.tick(now: at(4))
        #expect(early.expired.isEmpty)
        #expect(early.next == at(5))
        let due = watchdog.tick(now: at(5))
        #expect(due.expired == [1])
        // Answered once.
        let later = watchdog.tick(now: at(20))
        #expect(later.expired.isEmpty)
    }

    @Test func aBusyPoolThatStillHandsOutConnectionsIsWaitedFor() throws {
        var watchdog = running()
        _ = watchdog.begin(1, now: t0)
        let other = try #require(watchdog.begin(2, now: at(1)) as LeaseWatchdog<Int>.OperationID?)
        // Another operation got a connection at 4 s: the pool is alive, so operation 1 waits on until 9 s.
        let leased = watchdog.leased(other, now: at(4))
        #expect(leased)
        let tick = watchdog.tick(now: at(6))
        #expect(tick.expired.isEmpty)
        #expect(tick.next == at(9))
        let due = watchdog.tick(now: at(9))
        #expect(due.expired == [1])
    }

    @Test func aLeasedOrEndedOperationIsNeverFailed() throws {
        var watchdog = running()
        let first = try #require(watchdog.begin(1, now: t0) as LeaseWatchdog<Int>.OperationID?)
        let second = try #require(watchdog.begin(2, now: t0) as LeaseWatchdog<Int>.OperationID?)
        let leased = watchdog.leased(first, now: at(1))
        #expect(leased)
        watchdog.ended(second)
        let tick = watchdog.tick(now: at(60))
        #expect(tick.expired.isEmpty)
        let waiting = watchdog.stop()
        #expect(waiting.isEmpty)
    }

    /// The watchdog answered first: the operation must not run its statements when it gets a connection late.
    @Test func aConnectionForAnAnsweredOperationIsRefused() throws {
        var watchdog = running()
        let id = try #require(watchdog.begin(1, now: t0) as LeaseWatchdog<Int>.OperationID?)
        let due = watchdog.tick(now: at(5))
        #expect(due.expired == [1])
        let leased = watchdog.leased(id, now: at(6))
        #expect(!leased)
    }

    /// Before `run()` the pool is not there to hand out anything: nothing times out, and the pool gets the
    /// timeout from its start.
    @Test func nothingTimesOutBeforeTheStoreRuns() {
        var watchdog = LeaseWatchdog<Int>(timeout: timeout, now: t0)
        _ = watchdog.begin(1, now: t0)
        let idle = watchdog.tick(now: at(60))
        #expect(idle.expired.isEmpty)
        watchdog.start(now: at(60))
        let early = watchdog.tick(now: at(64))
        #expect(early.expired.isEmpty)
        let due = watchdog.tick(now: at(65))
        #expect(due.expired == [1])
    }

    @Test func stoppingFailsTheWaitingAndRefusesNewOperations() {
        var watchdog = running()
        _ = watchdog.begin(1, now: t0)
        _ = watchdog.begin(2, now: t0)
        let waiting = watchdog.stop()
        #expect(Set(waiting) == [1, 2])
        let late = watchdog.begin(3, now: t0)
        #expect(late == nil)
        let tick = watchdog.tick(now: at(60))
        #expect(tick.expired.isEmpty)
    }

    @Test func anIdleWatchdogTicksOncePerTimeout() {
        var watchdog = running()
        let tick = watchdog.tick(now: at(1))
        #expect(tick.next == at(6))
    }
}
