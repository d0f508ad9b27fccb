import DynRegServer
import Foundation
import Testing

@Suite("Failed admin logins per address")
struct FailedLoginsTests {
    let start = Date(timeIntervalSince1970: 1_800_000_000)
    let policy = {
        var policy = FailedLogins.Policy()
        (policy.limit, policy.lockout, policy.capacity) = (3, 120, 100)
        return policy
    }()

    @Test("the limit-th failure within the window locks the address for the lockout, and only that address")
    func locks() {
        var logins = FailedLogins(policy: policy)
        #expect(logins.recordFailure("a", now: start) == .init(log: true, lockedUntil: nil))
        #expect(logins.recordFailure("a", now: start + 1) == .init(log: false, lockedUntil: nil))
        #expect(logins.lockRemaining("a", now: start + 1) == nil)
        #expect(logins.recordFailure("a", now: start + 2) == .init(log: true, lockedUntil: start + 122))
        #expect(logins.lockRemaining("a", now: start + 2) == 120)
        #expect(logins.lockRemaining("a", now: start + 121) == 1)
        #expect(logins.lockRemaining("a", now: start + 122) == nil)
        #expect(logins.lockRemaining("b", now: start + 2) == nil)
    }

    @Test("failures spread wider than the window never lock; a new window logs its first failure again")
    func windowsReset() {
        var logins = FailedLogins(policy: policy)
        for step in 0..<10 {
            let verdict = logins.recordFailure("a", now: start + Double(step) * 31)
            #expect(verdict.lockedUntil == nil)
            #expect(verdict.log == (step % 2 == 0), "step \(step)")
        }
    }

    @Test("the table never holds more than its capacity, and a locked address outlives the clean-up")
    func bounded() {
        var logins = FailedLogins(policy: policy)
        for _ in 0..<3 { _ = logins.recordFailure("locked", now: start) }
        for index in 0..<1_000 {
            _ = logins.recordFailure("10.0.\(index / 256).\(index % 256)", now: start + 61 + Double(index) / 1_000)
            #expect(logins.addressCount <= policy.capacity)
        }
        #expect(logins.lockRemaining("locked", now: start + 62) != nil)
    }
}
