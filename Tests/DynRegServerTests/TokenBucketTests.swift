import DynRegStore
import Testing

@testable import DynRegServer

@Suite("Token buckets")
struct TokenBucketTests {
    @Test("a bucket allows its burst, then refills at its rate; the table never holds more than its capacity")
    func burstRefillAndCapacity() {
        let start = ContinuousClock.now
        let buckets = TokenBuckets(capacity: 3)
        let rate = RegistrationRate(perSecond: 1, burst: 2)
        #expect([0, 1, 2].map { _ in buckets.take("a", rate: rate, now: start) } == [true, true, false])
        #expect(buckets.take("a", rate: rate, now: start + .seconds(1)))
        // Drained buckets fill the table; new keys keep coming, within a second (no scan) and after it.
        for (index, key) in ["b", "c", "d", "e", "f"].enumerated() {
            #expect(buckets.take(key, rate: rate, now: start + .milliseconds(1_000 + index)))
            _ = buckets.take(key, rate: rate, now: start + .milliseconds(1_000 + index))
            #expect(buckets.count <= 3)
        }
        #expect(buckets.take("g", rate: rate, now: start + .seconds(10)))
        #expect(buckets.count <= 3)
        #expect(buckets.take("x", rate: RegistrationRate(perSecond: 0, burst: 1), now: start))
    }
}
