import Foundation
import Synchronization

/// Devices as broker logins read them, kept in memory: after a broker restarts, every device logs in again within
/// seconds, and each login would otherwise be a store read and an AES-GCM opening of its psk.
///
/// Exact: the store calls ``invalidate(productId:deviceName:)`` or ``update(_:writtenSince:)`` after every write
/// that changes a device row has committed, and a read that raced a write of its device is not kept
/// (``store(_:ifStillAt:)``). Only devices that exist are
/// kept; a device created later is read from the store on its first login.
///
/// On PostgreSQL, other instances' writes arrive as invalidations through a listener; while it cannot receive them,
/// the store turns the cache off (``disable()``), and on again (``enable()``) once it can.
///
/// Bounded by `capacity` devices, in stripes that each drop their entries when full: memory stays flat with
/// millions of devices, at the cost of re-reading some of them. An entry is about 90 bytes of table (the key's two
/// strings, and the device without them) plus its psk's string: 100,000 devices cost about 20 MiB.
package final class LoginCache: Sendable {
    private final class Stripe: Sendable {
        struct State {
            var devices: [Key: Entry] = [:]
            /// Raised by every invalidation of a key in this stripe.
            var generation: UInt64 = 0
            /// The generation of each key's last invalidation, so that a write to one key does not disturb reads
            /// and writes of the others (a thousand devices activating at once share each stripe).
            var invalidated: [Key: UInt64] = [:]
            /// Tokens older than this are disturbed: what `invalidated` knew of them was dropped to bound it.
            var floor: UInt64 = 0

            /// Whether `key` was invalidated after `token` was taken (or that can no longer be told).
            func disturbed(_ key: Key, since token: UInt64) -> Bool {
                token < floor || (invalidated[key] ?? 0) > token
            }

            mutating func invalidate(_ key: Key, trackedLimit: Int) {
                generation &+= 1
                if invalidated.count >= trackedLimit, invalidated[key] == nil {
                    invalidated.removeAll(keepingCapacity: true)
                    floor = generation
                }
                invalidated[key] = generation
            }

            mutating func invalidateAll() {
                generation &+= 1
                floor = generation
                invalidated.removeAll()
                devices.removeAll()
            }
        }
        let state = Mutex(State())
    }

    private struct Key: Hashable {
        var productId: String
        var deviceName: String
    }

    /// A device without the strings its key already holds, its dates as seconds (NaN for none): 56 bytes where a
    /// `Device` takes 104.
    private struct Entry {
        var status: DeviceStatus
        var psk: String?
        var createdAt: Double
        var registeredAt: Double
        var activatedAt: Double
        var registrationCount: Int

        init(_ device: Device) {
            status = device.status
            psk = device.psk
            createdAt = device.createdAt.timeIntervalSinceReferenceDate
            registeredAt = device.registeredAt?.timeIntervalSinceReferenceDate ?? .nan
            activatedAt = device.activatedAt?.timeIntervalSinceReferenceDate ?? .nan
            registrationCount = device.registrationCount
        }

        func device(_ key: Key) -> Device {
            Device(
                productId: key.productId, name: key.deviceName, status: status, psk: psk,
                createdAt: Date(timeIntervalSinceReferenceDate: createdAt), registeredAt: Self.date(registeredAt),
                activatedAt: Self.date(activatedAt), registrationCount: registrationCount)
        }

        private static func date(_ seconds: Double) -> Date? {
            seconds.isNaN ? nil : Date(timeIntervalSinceReferenceDate: seconds)
        }
    }

    /// A stripe's generation when a read began: the read's result is kept only if its key was not invalidated since.
    package struct Generation: Sendable {
        fileprivate var stripe: Int
        fileprivate var value: UInt64
    }

    private let stripes: [Stripe]
    private let stripeCapacity: Int
    /// Keys whose last invalidation each stripe remembers.
    private let trackedLimit = 512
    /// `false` while invalidations from other instances cannot be received (PostgreSQL's listener is down).
    private let enabled = Atomic<Bool>(true)

    /// `capacity` 0 keeps nothing. A stripe holds at most what fills three quarters of a power-of-two table
    /// (Swift's dictionaries grow past that load): 100,000 in 64 stripes keep 1,536 each in 2,048 slots, where
    /// 1,562 would take 4,096 slots, twice the memory for 2% more devices.
    package init(capacity: Int = 100_000, stripes count: Int = 64) {
        stripes = (0..<count).map { _ in Stripe() }
        stripeCapacity = Self.tableFriendly(capacity / count)
    }

    static func tableFriendly(_ perStripe: Int) -> Int {
        guard perStripe >= 12 else { return perStripe }
        var slots = 16
        while slots * 2 / 4 * 3 <= perStripe { slots *= 2 }
        return slots / 4 * 3
    }

    package var isEnabled: Bool { stripeCapacity > 0 && enabled.load(ordering: .acquiring) }

    private func stripe(_ key: Key) -> Int {
        var hasher = Hasher()
        hasher.combine(key)
        return Int(UInt(bitPattern: hasher.finalize()) % UInt(stripes.count))
    }

    package func device(productId: String, deviceName: String) -> Device? {
        guard isEnabled else { return nil }
        let key = Key(productId: productId, deviceName: deviceName)
        return stripes[stripe(key)].state.withLock { $0.devices[key] }?.device(key)
    }

    /// Taken before reading the device from the store.
    package func generation(productId: String, deviceName: String) -> Generation {
        let index = stripe(Key(productId: productId, deviceName: deviceName))
        return Generation(stripe: index, value: stripes[index].state.withLock { $0.generation })
    }

    /// Keeps `device` unless it was invalidated since `generation` was taken.
    package func store(_ device: Device, ifStillAt generation: Generation) {
        guard isEnabled else { return }
        let key = Key(productId: device.productId, deviceName: device.name)
        stripes[generation.stripe].state.withLock { state in
            guard !state.disturbed(key, since: generation.value) else { return }
            if state.devices.count >= stripeCapacity, state.devices[key] == nil {
                state.devices.removeAll(keepingCapacity: true)
            }
            state.devices[key] = Entry(device)
        }
    }

    /// After a write of `device` that committed: keeps the row as written if no other invalidation of it came since
    /// `generation` (taken before the write), else drops the key. Either way, reads that began before are not kept.
    package func update(_ device: Device, writtenSince generation: Generation) {
        let key = Key(productId: device.productId, deviceName: device.name)
        stripes[generation.stripe].state.withLock { state in
            let undisturbed = !state.disturbed(key, since: generation.value)
            state.invalidate(key, trackedLimit: trackedLimit)
            if undisturbed, isEnabled, state.devices[key] != nil || state.devices.count < stripeCapacity {
                state.devices[key] = Entry(device)
            } else {
                state.devices[key] = nil
            }
        }
    }

    package func invalidate(productId: String, deviceName: String) {
        let key = Key(productId: productId, deviceName: deviceName)
        stripes[stripe(key)].state.withLock { state in
            state.invalidate(key, trackedLimit: trackedLimit)
            state.devices[key] = nil
        }
    }

    /// Every device (a product deleted, or invalidations that may have been missed).
    package func invalidateAll() {
        for stripe in stripes {
            stripe.state.withLock { $0.invalidateAll() }
        }
    }

    /// The device for a login: from memory, else as `read` finds it, which is kept unless a write of it raced the
    /// read. A device that does not exist is not remembered as missing.
    package func device(
        productId: String, deviceName: String, reading read: () async throws -> Device?
    ) async throws -> Device? {
        if let cached = device(productId: productId, deviceName: deviceName) { return cached }
        let generation = generation(productId: productId, deviceName: deviceName)
        let device = try await read()
        if let device { store(device, ifStillAt: generation) }
        return device
    }

    /// Runs `write`, which changes one device's row, and keeps the cache exact: once it committed, the cache holds
    /// the row it returns (or forgets the device, for `nil`); when it failed, which may be after its commit, the
    /// cache forgets the device.
    package func writing<T>(
        productId: String, deviceName: String, _ write: () async throws -> (T, written: Device?)
    ) async throws -> T {
        let generation = generation(productId: productId, deviceName: deviceName)
        let outcome: (T, written: Device?)
        do {
            outcome = try await write()
        } catch {
            invalidate(productId: productId, deviceName: deviceName)
            throw error
        }
        if let written = outcome.written {
            update(written, writtenSince: generation)
        } else {
            invalidate(productId: productId, deviceName: deviceName)
        }
        return outcome.0
    }

    /// Stops answering from memory until ``enable()``; what it holds is dropped, and so is every read in flight.
    package func disable() {
        enabled.store(false, ordering: .releasing)
        invalidateAll()
    }

    /// Answers from memory again, starting empty: nothing read while it was off (when invalidations may have been
    /// missed) is kept, since those reads' tokens are older than the clearing.
    package func enable() {
        invalidateAll()
        enabled.store(true, ordering: .releasing)
    }

    /// How many devices it holds now.
    package var count: Int { stripes.reduce(0) { total, stripe in total + stripe.state.withLock { $0.devices.count } } }
}
