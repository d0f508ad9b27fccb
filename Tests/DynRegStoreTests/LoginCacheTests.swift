import DynRegTestSupport
import Foundation
import Testing

@testable import DynRegStore

@Suite struct LoginCacheTests {
    private func device(_ name: String, psk: String? = "psk", status: DeviceStatus = .registered) -> Device {
        Device(
            productId: "P", name: name, status: status, psk: psk, createdAt: StoreSamples.t0, registeredAt: nil,
            activatedAt: nil, registrationCount: 1)
    }

    @Test func aReadThatRacedAWriteIsNotKept() {
        let cache = LoginCache(capacity: 1000)
        let before = cache.generation(productId: "P", deviceName: "d")
        // A write commits while the read is on its way: the row the read found may be the old one.
        cache.invalidate(productId: "P", deviceName: "d")
        cache.store(device("d", psk: "old"), ifStillAt: before)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
        // A read with nothing in between is kept.
        cache.store(device("d", psk: "new"), ifStillAt: cache.generation(productId: "P", deviceName: "d"))
        #expect(cache.device(productId: "P", deviceName: "d")?.psk == "new")
    }

    @Test func aWriteKeepsItsRowOnlyIfNothingElseWroteMeanwhile() {
        let cache = LoginCache(capacity: 1000)
        let first = cache.generation(productId: "P", deviceName: "d")
        let second = cache.generation(productId: "P", deviceName: "d")
        cache.update(device("d", psk: "first"), writtenSince: first)
        #expect(cache.device(productId: "P", deviceName: "d")?.psk == "first")
        // The second write began before the first committed: which row is newer is unknown, so neither is kept.
        cache.update(device("d", psk: "second"), writtenSince: second)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
        // A read that began before a write that then committed is not kept either.
        let read = cache.generation(productId: "P", deviceName: "d")
        cache.update(device("d", psk: "third"), writtenSince: cache.generation(productId: "P", deviceName: "d"))
        cache.store(device("d", psk: "second"), ifStillAt: read)
        #expect(cache.device(productId: "P", deviceName: "d")?.psk == "third")
    }

    /// A thousand devices activating at once share each stripe: one device's write must not cost the others their
    /// place.
    @Test func writesToOtherDevicesDisturbNothing() {
        let cache = LoginCache(capacity: 1000, stripes: 1)
        let read = cache.generation(productId: "P", deviceName: "a")
        let write = cache.generation(productId: "P", deviceName: "b")
        for index in 0..<100 {
            cache.update(device("other\(index)"), writtenSince: cache.generation(productId: "P", deviceName: "x"))
            cache.invalidate(productId: "P", deviceName: "gone\(index)")
        }
        cache.store(device("a"), ifStillAt: read)
        cache.update(device("b"), writtenSince: write)
        #expect(cache.device(productId: "P", deviceName: "a") != nil)
        #expect(cache.device(productId: "P", deviceName: "b") != nil)
        // Past what a stripe remembers of its invalidations, older tokens count as disturbed: never a stale row.
        let old = cache.generation(productId: "P", deviceName: "c")
        for index in 0..<2000 { cache.invalidate(productId: "P", deviceName: "many\(index)") }
        cache.store(device("c"), ifStillAt: old)
        #expect(cache.device(productId: "P", deviceName: "c") == nil)
    }

    @Test func itHoldsNoMoreThanItsCapacity() {
        let cache = LoginCache(capacity: 640, stripes: 64)
        for index in 0..<10_000 {
            let name = "d\(index)"
            cache.store(device(name), ifStillAt: cache.generation(productId: "P", deviceName: name))
        }
        #expect(cache.count <= 640)
        #expect(cache.count > 0)
        // Each device it answers for is the one stored under its name.
        for index in 0..<10_000 {
            if let found = cache.device(productId: "P", deviceName: "d\(index)") { #expect(found.name == "d\(index)") }
        }
    }

    @Test func withoutCapacityItKeepsNothing() {
        let cache = LoginCache(capacity: 0)
        cache.store(device("d"), ifStillAt: cache.generation(productId: "P", deviceName: "d"))
        cache.update(device("e"), writtenSince: cache.generation(productId: "P", deviceName: "e"))
        #expect(cache.count == 0)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
    }

    /// Off (PostgreSQL's listener is down): it answers nothing, keeps nothing, and what it held is gone for good.
    @Test func disabledItAnswersNothingAndForgetsWhatItHad() {
        let cache = LoginCache(capacity: 1000)
        cache.store(device("d"), ifStillAt: cache.generation(productId: "P", deviceName: "d"))
        cache.disable()
        #expect(!cache.isEnabled)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
        cache.store(device("e"), ifStillAt: cache.generation(productId: "P", deviceName: "e"))
        cache.update(device("f"), writtenSince: cache.generation(productId: "P", deviceName: "f"))
        #expect(cache.count == 0)
        cache.enable()
        #expect(cache.isEnabled)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
        cache.store(device("d"), ifStillAt: cache.generation(productId: "P", deviceName: "d"))
        #expect(cache.device(productId: "P", deviceName: "d") != nil)
        #expect(LoginCache(capacity: 0).isEnabled == false)
    }

    /// A read that began while the cache was off may have missed an invalidation: it is not kept once it is on.
    @Test func aReadThatBeganWhileOffIsNotKeptOnceOn() {
        let cache = LoginCache(capacity: 1000)
        cache.disable()
        let whileOff = cache.generation(productId: "P", deviceName: "d")
        cache.enable()
        cache.store(device("d"), ifStillAt: whileOff)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
        // Nor one that began before it went off and ended after.
        let beforeOff = cache.generation(productId: "P", deviceName: "d")
        cache.disable()
        cache.enable()
        cache.store(device("d"), ifStillAt: beforeOff)
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
    }

    @Test func readingAndWritingThroughTheCache() async throws {
        let cache = LoginCache(capacity: 1000)
        var reads = 0
        for _ in 0..<3 {
            let found = try await cache.device(productId: "P", deviceName: "d") {
                reads += 1
                return device("d", psk: "first")
            }
            #expect(found?.psk == "first")
        }
        #expect(reads == 1)
        let written = try await cache.writing(productId: "P", deviceName: "d") { ("done", device("d", psk: "second")) }
        #expect(written == "done")
        #expect(cache.device(productId: "P", deviceName: "d")?.psk == "second")
        // A failed write may still have committed: the device is forgotten.
        struct Failed: Error {}
        await #expect(throws: Failed.self) {
            try await cache.writing(productId: "P", deviceName: "d") { () async throws -> (Int, written: Device?) in
                throw Failed()
            }
        }
        #expect(cache.device(productId: "P", deviceName: "d") == nil)
        // A device that does not exist is read every time.
        reads = 0
        for _ in 0..<2 {
            _ = try await cache.device(productId: "P", deviceName: "absent") {
                reads += 1
                return nil
            }
        }
        #expect(reads == 2)
    }

    @Test func invalidateAllForgetsEveryDeviceAndEveryReadInFlight() {
        let cache = LoginCache(capacity: 1000)
        let inFlight = cache.generation(productId: "P", deviceName: "x")
        for name in ["a", "b", "c"] {
            cache.store(device(name), ifStillAt: cache.generation(productId: "P", deviceName: name))
        }
        cache.invalidateAll()
        cache.store(device("x"), ifStillAt: inFlight)
        #expect(cache.count == 0)
    }

    @Test func itAnswersTheDeviceAsStoredDatesIncluded() {
        let cache = LoginCache(capacity: 1000)
        let registered = Device(
            productId: "P", name: "r", status: .activated, psk: "cHNr", createdAt: StoreSamples.t0,
            registeredAt: StoreSamples.t0.addingTimeInterval(0.125),
            activatedAt: StoreSamples.t0.addingTimeInterval(61),
            registrationCount: 7)
        let created = device("c", psk: nil, status: .created)
        for device in [registered, created] {
            cache.store(device, ifStillAt: cache.generation(productId: "P", deviceName: device.name))
            #expect(cache.device(productId: "P", deviceName: device.name) == device)
        }
    }

    @Test func stripesStopShortOfATableThatWouldDouble() {
        #expect(LoginCache.tableFriendly(100_000 / 64) == 1536)
        #expect(LoginCache.tableFriendly(1536) == 1536)
        #expect(LoginCache.tableFriendly(1535) == 768)
        #expect(LoginCache.tableFriendly(10) == 10)
        #expect(LoginCache.tableFriendly(0) == 0)
    }
}
