@testable import DynRegPostgres
import Testing

/// The lease watchdog's rules, without a database or a clock: instants are made up.
@Suite struct LeaseWatchdogTests {
    let t0 = ContinuousClock.now
    let timeout = Duration.seconds(5)

    func running() -> LeaseWatchdog<Int> {
        var watchdog = LeaseWatchdog<Int>(timeout: timeout, now: t0)
        watchdog.start(now: t0)
        return watchdog
    }

    @Test func aWaitingOperationFailsOnceNobodyGotAConnectionForTheTimeout() throws {
        var watchdog = running()
        _ = try #require(watchdog.begin(1, now: t0))
        let early = watchdog.tick(now: t0 + .seconds(4))
        #expect(early.expired.isEmpty)
        #expect(early.next == t0 + .seconds(5))
        #expect(watchdog.tick(now: t0 + .seconds(5)).expired == [1])
        // Answered once.
        #expect(watchdog.tick(now: t0 + .seconds(20)).expired.isEmpty)
    }

    @Test func aBusyPoolThatStillHandsOutConnectionsIsWaitedFor() throws {
        var watchdog = running()
        _ = try #require(watchdog.begin(1, now: t0))
        let other = try #require(watchdog.begin(2, now: t0 + .seconds(1)))
        // Another operation got a connection at 4 s: the pool is alive, so operation 1 waits on until 9 s.
        #expect(watchdog.leased(other, now: t0 + .seconds(4)))
        let tick = watchdog.tick(now: t0 + .seconds(6))
        #expect(tick.expired.isEmpty)
        #expect(tick.next == t0 + .seconds(9))
        #expect(watchdog.tick(now: t0 + .seconds(9)).expired == [1])
    }

    @Test func aLeasedOrEndedOperationIsNeverFailed() throws {
        var watchdog = running()
        let leased = try #require(watchdog.begin(1, now: t0))
        let ended = try #require(watchdog.begin(2, now: t0))
        #expect(watchdog.leased(leased, now: t0 + .seconds(1)))
        watchdog.ended(ended)
        #expect(watchdog.tick(now: t0 + .seconds(60)).expired.isEmpty)
        #expect(watchdog.stop().isEmpty)
    }

    /// The watchdog answered first: the operation must not run its statements when it gets a connection late.
    @Test func aConnectionForAnAnsweredOperationIsRefused() throws {
        var watchdog = running()
        let id = try #require(watchdog.begin(1, now: t0))
        #expect(watchdog.tick(now: t0 + .seconds(5)).expired == [1])
        #expect(!watchdog.leased(id, now: t0 + .seconds(6)))
    }

    /// Before `run()` the pool is not there to hand out anything: nothing times out, and the pool gets the
    /// timeout from its start.
    @Test func nothingTimesOutBeforeTheStoreRuns() throws {
        var watchdog = LeaseWatchdog<Int>(timeout: timeout, now: t0)
        _ = try #require(watchdog.begin(1, now: t0))
        #expect(watchdog.tick(now: t0 + .seconds(60)).expired.isEmpty)
        watchdog.start(now: t0 + .seconds(60))
        #expect(watchdog.tick(now: t0 + .seconds(64)).expired.isEmpty)
        #expect(watchdog.tick(now: t0 + .seconds(65)).expired == [1])
    }

    @Test func stoppingFailsTheWaitingAndRefusesNewOperations() throws {
        var watchdog = running()
        _ = try #require(watchdog.begin(1, now: t0))
        _ = try #require(watchdog.begin(2, now: t0))
        #expect(Set(watchdog.stop()) == [1, 2])
        #expect(watchdog.begin(3, now: t0) == nil)
        #expect(watchdog.tick(now: t0 + .seconds(60)).expired.isEmpty)
    }

    @Test func anIdleWatchdogTicksOncePerTimeout() {
        var watchdog = running()
        #expect(watchdog.tick(now: t0 + .seconds(1)).next == t0 + .seconds(6))
    }
}
