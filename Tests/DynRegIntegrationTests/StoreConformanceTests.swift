import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import Testing

/// One set of bodies, run unchanged against every `RegistrationStore`: the stores must be interchangeable.
@Suite("RegistrationStore conformance")
struct StoreConformanceTests {
    // MARK: Products

    @Test(arguments: StoreKind.allCases)
    func productCRUD(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            #expect(try await store.products().isEmpty)
            let created = try await store.createProduct(
                StoreSamples.product("PB", quota: 5, createdAt: StoreSamples.t0))
            #expect(created == StoreSamples.product("PB", quota: 5))
            _ = try await store.createProduct(StoreSamples.product("PA", createdAt: StoreSamples.t0))
            _ = try await store.createProduct(
                StoreSamples.product("P0", createdAt: StoreSamples.t0.addingTimeInterval(-10)))
            await StoreSamples.expectError(.productExists) {
                _ = try await store.createProduct(StoreSamples.product("PB"))
            }
            // Oldest first, then by id.
            #expect(try await store.products().map(\.id) == ["P0", "PA", "PB"])
            #expect(try await store.product(id: "PB") == created)
            #expect(try await store.product(id: "nope") == nil)

            var updated = try await store.updateProduct(id: "PB", ProductUpdate(name: "renamed", autoCreate: false))
            #expect(updated.name == "renamed")
            #expect(updated.autoCreate == false)
            #expect(updated.deviceQuota == 5)
            #expect(updated.dynamicRegistration == true)
            updated = try await store.updateProduct(
                id: "PB",
                ProductUpdate(dynamicRegistration: false, deviceQuota: .some(nil), allowClocklessDevices: true))
            #expect(updated.deviceQuota == nil)
            #expect(updated.dynamicRegistration == false)
            #expect(updated.allowClocklessDevices == true)
            #expect(updated.name == "renamed")
            updated = try await store.updateProduct(id: "PB", ProductUpdate(deviceQuota: .some(7)))
            #expect(updated.deviceQuota == 7)
            #expect(try await store.product(id: "PB") == updated)
            // An empty update changes nothing.
            #expect(try await store.updateProduct(id: "PB", ProductUpdate()) == updated)

            let rotated = try await store.rotateProductSecret(id: "PB", newSecret: "new-secret-0123456789abcd")
            #expect(rotated.secret == "new-secret-0123456789abcd")
            #expect(try await store.product(id: "PB")?.secret == "new-secret-0123456789abcd")

            try await store.deleteProduct(id: "PB")
            #expect(try await store.product(id: "PB") == nil)
            #expect(try await store.products().map(\.id) == ["P0", "PA"])
            await StoreSamples.expectError(.productNotFound) { try await store.deleteProduct(id: "PB") }
            await StoreSamples.expectError(.productNotFound) {
                _ = try await store.updateProduct(id: "PB", ProductUpdate())
            }
            await StoreSamples.expectError(.productNotFound) {
                _ = try await store.rotateProductSecret(id: "PB", newSecret: "x-0123456789abcdef")
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func deletingAProductForgetsItsDevicesAndNonces(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1)))
            _ = try await store.createDevice(productId: "P1", deviceName: "d2", now: StoreSamples.t0)
            try await store.recordEvent(
                RegistrationEvent(
                    time: StoreSamples.t0, productId: "P1", deviceName: "d1", outcome: "Success",
                    remoteAddress: "10.0.0.1",
                    endpoint: "/device/register"))
            try await store.deleteProduct(id: "P1")
            await StoreSamples.expectError(.productNotFound) {
                _ = try await store.devices(productId: "P1", status: nil, limit: 10, after: nil)
            }
            #expect(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1)) == .rejected(.productNotExist))

            _ = try await store.createProduct(StoreSamples.product("P1"))
            #expect(try await store.device(productId: "P1", deviceName: "d1") == nil)
            #expect(try await store.devices(productId: "P1", status: nil, limit: 10, after: nil).isEmpty)
            #expect(try await store.product(id: "P1")?.deviceCount == 0)
            // The old replay entry went with the product.
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1)))
            // The audit log outlives the product: three registrations (one refused) and the event recorded by hand.
            #expect(
                try await store.events(productId: "P1", limit: 10).map(\.outcome)
                    == ["Success", RegistrationErrorCode.productNotExist.code, "Success", "Success"])
        }
    }

    // MARK: Devices

    @Test(arguments: StoreKind.allCases)
    func createDevice(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", quota: 2)) { store in
            let device = try await store.createDevice(productId: "P1", deviceName: "d1", now: StoreSamples.t0)
            #expect(
                device
                    == Device(
                        productId: "P1", name: "d1", status: .created, psk: nil, createdAt: StoreSamples.t0,
                        registeredAt: nil,
                        activatedAt: nil, registrationCount: 0))
            #expect(try await store.device(productId: "P1", deviceName: "d1") == device)
            #expect(try await store.device(productId: "P1", deviceName: "d9") == nil)
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
            await StoreSamples.expectError(.deviceExists) {
                _ = try await store.createDevice(productId: "P1", deviceName: "d1", now: StoreSamples.t0)
            }
            await StoreSamples.expectError(.productNotFound) {
                _ = try await store.createDevice(productId: "P9", deviceName: "d1", now: StoreSamples.t0)
            }
            _ = try await store.createDevice(productId: "P1", deviceName: "d2", now: StoreSamples.t0)
            await StoreSamples.expectError(.quotaExceeded) {
                _ = try await store.createDevice(productId: "P1", deviceName: "d3", now: StoreSamples.t0)
            }
            try await StoreSamples.expectCountConsistent(store, "P1", is: 2)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func listingPagesByNameAndFiltersByStatus(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            _ = try await store.createProduct(StoreSamples.product("P2"))
            // Byte order, whatever the database's locale: digits, upper case, '_', lower case.
            let names = ["b:3", "A-1", "a_1", "Z@9", "B.2", "0x", "a-1", "_u", "@"]
            for name in names {
                _ = try await store.createDevice(productId: "P1", deviceName: name, now: StoreSamples.t0)
            }
            _ = try await store.createDevice(productId: "P2", deviceName: "other", now: StoreSamples.t0)
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "B.2", nonce: 1)))
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "a_1", nonce: 2)))
            _ = try await store.activateDevice(productId: "P1", deviceName: "a_1", now: StoreSamples.t0)

            let sorted = names.sorted { Array($0.utf8).lexicographicallyPrecedes(Array($1.utf8)) }
            var pages: [[String]] = []
            var cursor: String?
            repeat {
                let page = try await store.devices(productId: "P1", status: nil, limit: 4, after: cursor)
                if page.isEmpty { break }
                pages.append(page.map(\.name))
                cursor = page.last?.name
            } while true
            #expect(pages.map(\.count) == [4, 4, 1])
            #expect(pages.flatMap { $0 } == sorted)
            #expect(try await store.devices(productId: "P1", status: nil, limit: 0, after: nil).isEmpty)
            #expect(try await store.devices(productId: "P1", status: nil, limit: 100, after: sorted.last).isEmpty)

            #expect(
                try await store.devices(productId: "P1", status: .registered, limit: 100, after: nil).map(\.name) == [
                    "B.2"
                ])
            #expect(
                try await store.devices(productId: "P1", status: .activated, limit: 100, after: nil).map(\.name) == [
                    "a_1"
                ])
            let created = try await store.devices(productId: "P1", status: .created, limit: 100, after: nil)
            #expect(created.map(\.name) == sorted.filter { $0 != "B.2" && $0 != "a_1" })
            let afterCursor = try await store.devices(productId: "P1", status: .created, limit: 2, after: "B")
            #expect(
                afterCursor.map(\.name) == Array(sorted.filter { $0 > "B" && $0 != "B.2" && $0 != "a_1" }.prefix(2)))
            await StoreSamples.expectError(.productNotFound) {
                _ = try await store.devices(productId: "P9", status: nil, limit: 10, after: nil)
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func deleteDevice(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 7)))
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d2", nonce: 7)))
            try await store.deleteDevice(productId: "P1", deviceName: "d1")
            #expect(try await store.device(productId: "P1", deviceName: "d1") == nil)
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
            await StoreSamples.expectError(.deviceNotFound) {
                try await store.deleteDevice(productId: "P1", deviceName: "d1")
            }
            await StoreSamples.expectError(.deviceNotFound) {
                try await store.deleteDevice(productId: "P9", deviceName: "d2")
            }
            // Its replay entries went with it; the other device's stay.
            let again = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 7)))
            #expect(again?.registrationCount == 1)
            #expect(try await store.register(StoreSamples.attempt("P1", "d2", nonce: 7)) == .rejected(.nonceReused))
            try await StoreSamples.expectCountConsistent(store, "P1")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func resetDevice(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", clockless: true)) { store in
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, timestamp: 0, expiry: nil)))
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 2)))
            let reset = try await store.resetDevice(productId: "P1", deviceName: "d1")
            #expect(reset.status == .created)
            #expect(reset.psk == nil)
            #expect(reset.registeredAt == nil)
            #expect(reset.registrationCount == 2)
            #expect(reset.createdAt == StoreSamples.t0)
            #expect(try await store.device(productId: "P1", deviceName: "d1") == reset)
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
            // The clockless entry is gone; the timed one stays until it expires.
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, timestamp: 0, expiry: nil)))
            #expect(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 2)) == .rejected(.nonceReused))
            // Resetting an activated device forgets the activation too.
            _ = try await store.activateDevice(productId: "P1", deviceName: "d1", now: StoreSamples.t0)
            let again = try await store.resetDevice(productId: "P1", deviceName: "d1")
            #expect(again.status == .created)
            #expect(again.activatedAt == nil)
            #expect(again.registrationCount == 3)
            await StoreSamples.expectError(.deviceNotFound) {
                _ = try await store.resetDevice(productId: "P1", deviceName: "x")
            }
        }
    }

    @Test(arguments: StoreKind.allCases)
    func activateDevice(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            let registered = try #require(
                StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1))))
            let later = StoreSamples.t0.addingTimeInterval(60)
            let activated = try await store.activateDevice(productId: "P1", deviceName: "d1", now: later)
            #expect(activated.status == .activated)
            #expect(activated.activatedAt == later)
            #expect(activated.psk == registered.psk)
            #expect(activated.registeredAt == StoreSamples.t0)
            // Idempotent: the first activation time stays.
            let again = try await store.activateDevice(
                productId: "P1", deviceName: "d1", now: later.addingTimeInterval(60))
            #expect(again == activated)
            await StoreSamples.expectError(.deviceNotFound) {
                _ = try await store.activateDevice(productId: "P1", deviceName: "d9", now: later)
            }
        }
    }

    // MARK: Registration

    @Test(arguments: StoreKind.allCases)
    func registrationWithAutoCreate(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            #expect(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1)) == .rejected(.productNotExist))
            _ = try await store.createProduct(StoreSamples.product("P1"))
            let device = try #require(
                StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K1"))))
            #expect(
                device
                    == Device(
                        productId: "P1", name: "d1", status: .registered, psk: "K1", createdAt: StoreSamples.t0,
                        registeredAt: StoreSamples.t0, activatedAt: nil, registrationCount: 1))
            #expect(try await store.device(productId: "P1", deviceName: "d1") == device)
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func registrationWithoutAutoCreate(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", autoCreate: false)) { store in
            #expect(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1)) == .rejected(.deviceNotExist))
            #expect(try await store.device(productId: "P1", deviceName: "d1") == nil)
            #expect(try await store.product(id: "P1")?.deviceCount == 0)
            _ = try await store.createDevice(
                productId: "P1", deviceName: "d1", now: StoreSamples.t0.addingTimeInterval(-5))
            // The refused attempt consumed no nonce.
            let later = StoreSamples.t0.addingTimeInterval(5)
            let device = try #require(
                StoreSamples.issued(
                    try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K1", now: later))))
            #expect(device.status == .registered)
            #expect(device.psk == "K1")
            #expect(device.createdAt == StoreSamples.t0.addingTimeInterval(-5))
            #expect(device.registeredAt == later)
            #expect(device.registrationCount == 1)
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func quota(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", quota: 2)) { store in
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1)))
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d2", nonce: 2)))
            #expect(try await store.register(StoreSamples.attempt("P1", "d3", nonce: 3)) == .rejected(.deviceQuota))
            // A full product still re-registers the devices it holds.
            #expect(
                StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 4)))?
                    .registrationCount == 2)
            #expect(try await store.product(id: "P1")?.deviceCount == 2)
            // The refusal consumed no nonce: with room made, the same attempt passes.
            _ = try await store.updateProduct(id: "P1", ProductUpdate(deviceQuota: .some(3)))
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d3", nonce: 3)))

            _ = try await store.createProduct(StoreSamples.product("P0", quota: 0))
            #expect(try await store.register(StoreSamples.attempt("P0", "d1", nonce: 1)) == .rejected(.deviceQuota))
            // Lowering a quota below the count refuses new devices and keeps the old.
            _ = try await store.updateProduct(id: "P1", ProductUpdate(deviceQuota: .some(1)))
            #expect(try await store.register(StoreSamples.attempt("P1", "d4", nonce: 5)) == .rejected(.deviceQuota))
            try await StoreSamples.expectCountConsistent(store, "P1", is: 3)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentRegistrationsNeverExceedTheQuota(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", quota: 50)) { store in
            let decisions = try await registerConcurrently(
                store, (0..<200).map { StoreSamples.attempt("P1", "dev-\($0)", nonce: Int64($0)) })
            let issued = decisions.filter { if case .issued = $0 { return true } else { return false } }
            #expect(issued.count == 50)
            #expect(decisions.filter { $0 == .rejected(.deviceQuota) }.count == 150)
            try await StoreSamples.expectCountConsistent(store, "P1", is: 50)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func concurrentRegistrationsOfOneDevice(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", quota: 1)) { store in
            // Different nonces: each one re-registers; the stored psk is one of those issued.
            let psks = try await registerConcurrently(
                store, (0..<40).map { StoreSamples.attempt("P1", "d1", nonce: Int64($0), psk: "K\($0)") }
            ).compactMap { StoreSamples.issued($0)?.psk }
            #expect(psks.count == 40)
            let device = try #require(try await store.device(productId: "P1", deviceName: "d1"))
            #expect(device.registrationCount == 40)
            #expect(psks.contains(device.psk ?? ""))
            // One nonce: exactly one wins.
            let decisions = try await registerConcurrently(
                store, Array(repeating: StoreSamples.attempt("P1", "d1", nonce: 1000), count: 20))
            #expect(decisions.filter { $0 == .rejected(.nonceReused) }.count == 19)
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aByteIdenticalRetryGetsItsFirstAnswer(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            let payload = EncryptedPayload(length: 5, payload: "first")
            var attempt = StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K1")
            attempt.repeatable = RepeatableRequest(digest: [1, 2, 3], payload: payload)
            guard case .issued(_, created: true) = try await store.register(attempt) else {
                Issue.record("the first registration did not create the device")
                return
            }
            // The repeat's own credential and payload are dropped: nothing new is issued.
            var again = attempt
            again.credential = .key(psk: "K2")
            again.repeatable?.payload = EncryptedPayload(length: 6, payload: "second")
            #expect(try await store.register(again) == .repeated(RegistrationAnswer(payload: payload, created: true)))
            let device = try await store.device(productId: "P1", deviceName: "d1")
            #expect(device?.psk == "K1")
            #expect(device?.registrationCount == 1)
            var other = attempt
            other.repeatable?.digest = [9]
            #expect(try await store.register(other) == .rejected(.nonceReused))
            var unmarked = attempt
            unmarked.repeatable = nil
            #expect(try await store.register(unmarked) == .rejected(.nonceReused))
            // A newer registration of the device: the first answer's credential is gone.
            var newer = StoreSamples.attempt("P1", "d1", nonce: 2, psk: "K3")
            newer.repeatable = RepeatableRequest(digest: [4], payload: payload)
            guard case .issued(_, let created) = try await store.register(newer) else {
                Issue.record("the newer registration was refused")
                return
            }
            #expect(!created)
            #expect(try await store.register(again) == .rejected(.nonceReused))
            #expect(
                try await store.register(newer) == .repeated(RegistrationAnswer(payload: payload, created: false)))
            let outcomes = try await store.events(productId: "P1", limit: 10).map(\.outcome)
            #expect(
                outcomes.reversed() == [
                    "Success", "Retry", "AuthFailure.NonceReused", "AuthFailure.NonceReused", "Success",
                    "AuthFailure.NonceReused", "Retry",
                ])
            // Purged with its replay entry.
            #expect(try await store.purgeExpiredNonces(now: StoreSamples.t0.addingTimeInterval(3600)) == 2)
            #expect(StoreSamples.issued(try await store.register(newer))?.registrationCount == 3)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func reRegistrationIssuesANewCredential(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K1")))
            let later = StoreSamples.t0.addingTimeInterval(30)
            let second = try #require(
                StoreSamples.issued(
                    try await store.register(StoreSamples.attempt("P1", "d1", nonce: 2, psk: "K2", now: later))))
            #expect(second.psk == "K2")
            #expect(second.registrationCount == 2)
            #expect(second.registeredAt == later)
            #expect(second.createdAt == StoreSamples.t0)
            #expect(try await store.device(productId: "P1", deviceName: "d1")?.psk == "K2")
            #expect(try await store.product(id: "P1")?.deviceCount == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func activatedDevicesAreRefused(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K1")))
            _ = try await store.activateDevice(productId: "P1", deviceName: "d1", now: StoreSamples.t0)
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 2, psk: "K2"))
                    == .rejected(.deviceAlreadyActivated))
            // Refusal wins over a reused nonce, as in the check order.
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1))
                    == .rejected(.deviceAlreadyActivated))
            let device = try #require(try await store.device(productId: "P1", deviceName: "d1"))
            #expect(device.psk == "K1")
            #expect(device.registrationCount == 1)
            // After a reset it may register again.
            _ = try await store.resetDevice(productId: "P1", deviceName: "d1")
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 3, psk: "K3")))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func reusedNoncesAreRefused(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K1")))
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, psk: "K2"))
                    == .rejected(.nonceReused))
            #expect(try await store.device(productId: "P1", deviceName: "d1")?.psk == "K1")
            #expect(try await store.device(productId: "P1", deviceName: "d1")?.registrationCount == 1)
            // The pair is (timestamp, nonce) per device.
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, timestamp: 1_700_000_001)))
            _ = StoreSamples.issued(try await store.register(StoreSamples.attempt("P1", "d2", nonce: 1)))
            #expect(try await store.product(id: "P1")?.deviceCount == 2)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func clocklessNoncesAreKeptUntilActivation(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", clockless: true)) { store in
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 5, timestamp: 0, expiry: nil)))
            #expect(try await store.purgeExpiredNonces(now: StoreSamples.t0.addingTimeInterval(10 * 365 * 86_400)) == 0)
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 5, timestamp: 0, expiry: nil))
                    == .rejected(.nonceReused))
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 6, timestamp: 0, expiry: nil)))
            _ = try await store.activateDevice(productId: "P1", deviceName: "d1", now: StoreSamples.t0)
            _ = try await store.resetDevice(productId: "P1", deviceName: "d1")
            // Activation forgot them: after a reset, the old nonces pass.
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 5, timestamp: 0, expiry: nil)))
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 6, timestamp: 0, expiry: nil)))
        }
    }

    @Test(arguments: StoreKind.allCases)
    func purgeExpiredNonces(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1")) { store in
            let now = StoreSamples.t0
            let expiries: [Int64: Date] = [
                1: now.addingTimeInterval(-10), 2: now.addingTimeInterval(-1), 3: now, 4: now.addingTimeInterval(10),
            ]
            for (nonce, expiry) in expiries.sorted(by: { $0.key < $1.key }) {
                _ = StoreSamples.issued(
                    try await store.register(StoreSamples.attempt("P1", "d1", nonce: nonce, expiry: expiry)))
            }
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 5, timestamp: 0, expiry: nil)))
            // Strictly before `now`.
            #expect(try await store.purgeExpiredNonces(now: now) == 2)
            #expect(try await store.purgeExpiredNonces(now: now) == 0)
            _ = StoreSamples.issued(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 1, expiry: expiries[1])))
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 3, expiry: now))
                    == .rejected(.nonceReused))
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 4, expiry: now))
                    == .rejected(.nonceReused))
            #expect(
                try await store.register(StoreSamples.attempt("P1", "d1", nonce: 5, timestamp: 0, expiry: nil))
                    == .rejected(.nonceReused))
            #expect(try await store.purgeExpiredNonces(now: now.addingTimeInterval(11)) == 3)
        }
    }

    // MARK: Certificates

    @Test(arguments: StoreKind.allCases)
    func certificateAuthorityIsStoredWithTheProduct(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let product = StoreSamples.certificateProduct("PC")
            #expect(try await store.createProduct(product) == product)
            #expect(try await store.product(id: "PC")?.certificateAuthority == StoreSamples.authority)
            #expect(try await store.products().first?.certificateAuthority == StoreSamples.authority)
            _ = try await store.createProduct(StoreSamples.product("PK"))
            #expect(try await store.product(id: "PK")?.certificateAuthority == nil)
            let updated = try await store.updateProduct(id: "PC", ProductUpdate(name: "renamed"))
            #expect(updated.certificateAuthority == StoreSamples.authority)
            #expect(updated.authType == .certificate)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func trustedDeviceCAsAreKeptAndReplaced(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            var product = StoreSamples.certificateProduct("PT")
            let first = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"
            let second = "-----BEGIN CERTIFICATE-----\nBBBB\nCCCC\n-----END CERTIFICATE-----"
            product.trustedDeviceCAs = [first, second]
            #expect(try await store.createProduct(product).trustedDeviceCAs == [first, second])
            #expect(try await store.product(id: "PT")?.trustedDeviceCAs == [first, second])
            // An update that does not name them keeps them; one that does replaces them.
            #expect(
                try await store.updateProduct(id: "PT", ProductUpdate(name: "n")).trustedDeviceCAs == [first, second])
            let replaced = try await store.updateProduct(id: "PT", ProductUpdate(trustedDeviceCAs: [second]))
            #expect(replaced.trustedDeviceCAs == [second])
            #expect(try await store.updateProduct(id: "PT", ProductUpdate(trustedDeviceCAs: [])).trustedDeviceCAs == [])
            #expect(try await store.product(id: "PT")?.trustedDeviceCAs == [])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aKeptCertificateStaysTheDevicesOnly(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.certificateProduct("PC")) { store in
            let own = StoreSamples.certificate("0b01", "d1", issuedAt: StoreSamples.t0)
            _ = StoreSamples.issued(try await store.register(StoreSamples.certificateAttempt("d1", own, nonce: 1)))
            var again = StoreSamples.certificateAttempt("d1", own, nonce: 2)
            again.credential = .certificateKept
            let device = try #require(StoreSamples.issued(try await store.register(again)))
            #expect(device.registrationCount == 2)
            #expect(device.psk == nil)
            #expect(try await store.certificates(productId: "PC", deviceName: "d1") == [own])
            #expect(try await store.certificate(fingerprint: own.fingerprint)?.revokedAt == nil)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func certificatesAreIssuedRevokedAndFound(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.certificateProduct("PC")) { store in
            let first = StoreSamples.certificate("0a01", "d1", issuedAt: StoreSamples.t0)
            let device = try #require(
                StoreSamples.issued(try await store.register(StoreSamples.certificateAttempt("d1", first, nonce: 1))))
            #expect(device.psk == nil)
            #expect(device.status == .registered)
            #expect(try await store.certificates(productId: "PC", deviceName: "d1") == [first])

            // A new registration revokes the certificate it replaces, at the registration's time.
            let later = StoreSamples.t0.addingTimeInterval(10)
            let second = StoreSamples.certificate("0a02", "d1", issuedAt: later)
            _ = StoreSamples.issued(try await store.register(StoreSamples.certificateAttempt("d1", second, nonce: 2)))
            var revokedFirst = first
            revokedFirst.revokedAt = later
            #expect(try await store.certificates(productId: "PC", deviceName: "d1") == [second, revokedFirst])
            // A page at a time, the cursor being the last serial of the page before (in either case).
            func page(_ after: String?) async throws -> [DeviceCertificate] {
                try await store.certificates(productId: "PC", deviceName: "d1", limit: 1, after: after)
            }
            #expect(try await page(nil) == [second])
            #expect(try await page("0A02") == [revokedFirst])
            #expect(try await page(first.serial).isEmpty)
            #expect(try await page("ffff").isEmpty)
            #expect(try await store.revokedCertificates(productId: "PC") == [revokedFirst])
            #expect(try await store.certificate(fingerprint: "FP0A02") == second)
            #expect(try await store.certificate(fingerprint: "nope") == nil)
            // A refused registration issues nothing.
            #expect(
                try await store.register(
                    StoreSamples.certificateAttempt(
                        "d1", StoreSamples.certificate("0a03", "d1", issuedAt: later), nonce: 2))
                    == .rejected(.nonceReused))
            #expect(try await store.certificate(fingerprint: "fp0a03") == nil)

            // Revocation by serial, any case, idempotent.
            let revokeTime = StoreSamples.t0.addingTimeInterval(20)
            var revokedSecond = second
            revokedSecond.revokedAt = revokeTime
            #expect(
                try await store.revokeCertificate(productId: "PC", serial: "0A02", now: revokeTime) == revokedSecond)
            #expect(
                try await store.revokeCertificate(
                    productId: "PC", serial: "0a02", now: revokeTime.addingTimeInterval(5))
                    == revokedSecond)
            #expect(try await store.revokedCertificates(productId: "PC") == [revokedFirst, revokedSecond])
            await StoreSamples.expectError(.certificateNotFound) {
                _ = try await store.revokeCertificate(productId: "PC", serial: "ffff", now: revokeTime)
            }
            await StoreSamples.expectError(.certificateNotFound) {
                _ = try await store.revokeCertificate(productId: "PK", serial: "0a02", now: revokeTime)
            }
            await StoreSamples.expectError(.deviceNotFound) {
                _ = try await store.certificates(productId: "PC", deviceName: "d9")
            }

            // Reset and delete revoke what is still valid; deleting the product forgets its certificates.
            _ = StoreSamples.issued(
                try await store.register(
                    StoreSamples.certificateAttempt(
                        "d2", StoreSamples.certificate("0b01", "d2", issuedAt: later), nonce: 1)))
            _ = StoreSamples.issued(
                try await store.register(
                    StoreSamples.certificateAttempt(
                        "d3", StoreSamples.certificate("0c01", "d3", issuedAt: later), nonce: 1)))
            _ = try await store.resetDevice(productId: "PC", deviceName: "d2")
            #expect(try await store.certificate(fingerprint: "fp0b01")?.revokedAt != nil)
            try await store.deleteDevice(productId: "PC", deviceName: "d3")
            #expect(try await store.certificate(fingerprint: "fp0c01")?.revokedAt != nil)
            #expect(try await store.revokedCertificates(productId: "PC").count == 4)
            try await store.deleteProduct(id: "PC")
            #expect(try await store.certificate(fingerprint: "fp0a01") == nil)
            #expect(try await store.revokedCertificates(productId: "PC").isEmpty)
        }
    }

    // MARK: Audit log and health

    @Test(arguments: StoreKind.allCases)
    func registrationWritesItsAuditEventWithTheDecision(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("PE", quota: 1)) { store in
            func attempt(_ name: String, nonce: Int64) -> RegistrationAttempt {
                var attempt = StoreSamples.attempt("PE", name, nonce: nonce)
                attempt.remoteAddress = "198.51.100.7"
                attempt.endpoint = "/register/dev"
                return attempt
            }
            _ = StoreSamples.issued(try await store.register(attempt("d1", nonce: 1)))
            #expect(try await store.register(attempt("d1", nonce: 1)) == .rejected(.nonceReused))
            #expect(try await store.register(attempt("d2", nonce: 2)) == .rejected(.deviceQuota))
            #expect(try await store.register(StoreSamples.attempt("PX", "d", nonce: 3)) == .rejected(.productNotExist))
            let events = try await store.events(productId: "PE", limit: 10)
            #expect(
                events.map(\.outcome) == [
                    RegistrationErrorCode.deviceQuota.code, RegistrationErrorCode.nonceReused.code, "Success",
                ])
            #expect(events.map(\.deviceName) == ["d2", "d1", "d1"])
            #expect(
                events.allSatisfy {
                    $0.remoteAddress == "198.51.100.7" && $0.endpoint == "/register/dev" && $0.time == StoreSamples.t0
                })
            #expect(
                try await store.events(productId: "PX", limit: 10).map(\.outcome) == [
                    RegistrationErrorCode.productNotExist.code
                ])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func theAdmissionViewFollowsProductWrites(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            #expect(try await store.productForAdmission(id: "PA") == nil)
            _ = try await store.createProduct(StoreSamples.product("PA"))
            let first = try #require(try await store.productForAdmission(id: "PA"))
            #expect(first.secret == StoreSamples.product("PA").secret)
            _ = try await store.rotateProductSecret(id: "PA", newSecret: "rotated-secret-0123456789")
            #expect(try await store.productForAdmission(id: "PA")?.secret == "rotated-secret-0123456789")
            _ = try await store.updateProduct(id: "PA", ProductUpdate(dynamicRegistration: false))
            #expect(try await store.productForAdmission(id: "PA")?.dynamicRegistration == false)
            try await store.deleteProduct(id: "PA")
            #expect(try await store.productForAdmission(id: "PA") == nil)
        }
    }

    /// Events written in this order (ids grow), the times around `perMinuteBase`, a minute boundary.
    static let perMinuteBase = Date(timeIntervalSince1970: 1_700_000_040)
    static let perMinuteEvents: [(offset: TimeInterval, product: String, outcome: String)] = [
        (-7200, "P1", "Success"),  // long before
        (-90, "P1", "Success"),  // before the slack: where the scan stops
        (-30, "P2", "Success"),  // within the slack, before `since`: read, not counted
        (5, "P1", "Success"),
        (50, "P2", "AuthFailure.SignatureFailure"),
        (20, "P1", "Success"),  // written after a later one, within the slack
        (65, "P1", "Admin.ProductUpdated"),  // an operator's action, not a registration
        (61, "P2", "Success"),
        (125, "P1", "Success"), (130, "P3", "Success"), (179.9, "P1", "AuthFailure.SignatureFailure"),
        (3599, "P3", "Retry"),
    ]

    @Test(arguments: StoreKind.allCases)
    func registrationsPerMinute(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let base = Self.perMinuteBase
            #expect(try await store.registrationsPerMinute(since: base).isEmpty)
            for (index, event) in Self.perMinuteEvents.enumerated() {
                try await store.recordEvent(
                    RegistrationEvent(
                        time: base.addingTimeInterval(event.offset), productId: event.product, deviceName: "d\(index)",
                        outcome: event.outcome, remoteAddress: "192.0.2.1", endpoint: "/device/register"))
            }
            func counts(_ since: Date) async throws -> [String] {
                try await store.registrationsPerMinute(since: since).map {
                    "\(Int($0.minute.timeIntervalSince(base) / 60)) \($0.outcome) \($0.count)"
                }
            }
            #expect(
                try await counts(base) == [
                    "0 AuthFailure.SignatureFailure 1", "0 Success 2", "1 Success 1",
                    "2 AuthFailure.SignatureFailure 1",
                    "2 Success 2", "59 Retry 1",
                ])
            #expect(
                try await counts(base.addingTimeInterval(120)) == [
                    "2 AuthFailure.SignatureFailure 1", "2 Success 2", "59 Retry 1",
                ])
            #expect(try await counts(base.addingTimeInterval(-7200)).first == "-120 Success 1")
            #expect(try await counts(base.addingTimeInterval(3600)).isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func eventsOfEveryProduct(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let base = Self.perMinuteBase
            for (index, event) in Self.perMinuteEvents.enumerated() {
                try await store.recordEvent(
                    RegistrationEvent(
                        time: base.addingTimeInterval(event.offset), productId: event.product, deviceName: "d\(index)",
                        outcome: event.outcome, remoteAddress: "192.0.2.1", endpoint: "/device/register"))
            }
            // The log's order across products, newest first, filtered by the store.
            #expect(
                try await store.events(productId: nil, EventQuery(limit: 3)).map(\.deviceName) == ["d11", "d10", "d9"])
            let failures = try await store.events(
                productId: nil, EventQuery(limit: 100, outcome: "AuthFailure.SignatureFailure"))
            #expect(failures.map(\.deviceName) == ["d10", "d4"])
            #expect(
                try await store.events(productId: nil, EventQuery(limit: 100, deviceName: "d7")).map(\.productId) == [
                    "P2"
                ])
            // A bounded scan: only the newest three events are looked at.
            #expect(
                try await store.events(
                    productId: nil, EventQuery(limit: 100, outcome: "AuthFailure.SignatureFailure", scanLimit: 3)
                ).map(\.deviceName) == ["d10"])
            let page = try await store.events(productId: nil, EventQuery(limit: 100, before: failures[0].id))
            #expect(page.count == 10 && page.first?.deviceName == "d9")
            // One product's filter as before.
            #expect(
                try await store.events(productId: "P1", EventQuery(limit: 100, outcome: "Success")).map(\.deviceName)
                    == ["d8", "d5", "d3", "d1", "d0"])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func eventsNewestFirst(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            #expect(try await store.events(productId: "P1", limit: 10).isEmpty)
            for index in 0..<5 {
                try await store.recordEvent(
                    RegistrationEvent(
                        time: StoreSamples.t0.addingTimeInterval(Double(index)), productId: "P1",
                        deviceName: "d\(index)",
                        outcome: index == 2 ? "AuthFailure.SignatureFailure" : "Success",
                        remoteAddress: "192.0.2.\(index)", endpoint: index == 4 ? "/register/dev" : "/device/register"))
                try await store.recordEvent(
                    RegistrationEvent(
                        time: StoreSamples.t0, productId: "P2", deviceName: "x", outcome: "Success",
                        remoteAddress: "::1",
                        endpoint: "/device/register"))
            }
            let events = try await store.events(productId: "P1", limit: 3)
            #expect(events.map(\.deviceName) == ["d4", "d3", "d2"])
            #expect(events[0].id > events[1].id && events[1].id > events[2].id)
            #expect(
                events[0]
                    == RegistrationEvent(
                        id: events[0].id, time: StoreSamples.t0.addingTimeInterval(4), productId: "P1",
                        deviceName: "d4",
                        outcome: "Success", remoteAddress: "192.0.2.4", endpoint: "/register/dev"))
            #expect(events[2].outcome == "AuthFailure.SignatureFailure")
            #expect(try await store.events(productId: "P1", limit: 100).count == 5)
            #expect(try await store.events(productId: "P2", limit: 100).count == 5)
            #expect(try await store.events(productId: "P1", limit: 0).isEmpty)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func deviceCountStaysRightUnderMixedConcurrentWork(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("P1", quota: 30)) { store in
            for index in 0..<20 {
                _ = try await store.createDevice(productId: "P1", deviceName: "pre-\(index)", now: StoreSamples.t0)
            }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for index in 0..<120 {
                    group.addTask {
                        switch index % 4 {
                        case 0:
                            _ = try await store.register(
                                StoreSamples.attempt("P1", "new-\(index % 24)", nonce: Int64(index)))
                        case 1: try? await store.deleteDevice(productId: "P1", deviceName: "pre-\(index % 20)")
                        case 2:
                            _ = try? await store.createDevice(
                                productId: "P1", deviceName: "pre-\(index % 20)", now: StoreSamples.t0)
                        default: _ = try? await store.resetDevice(productId: "P1", deviceName: "new-\(index % 24)")
                        }
                    }
                }
                try await group.waitForAll()
            }
            let product = try #require(try await store.product(id: "P1"))
            #expect(product.deviceCount <= 30)
            try await StoreSamples.expectCountConsistent(store, "P1")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func refusalCountsAddUpPerMinute(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let minute = StoreSamples.t0
            func count(_ product: String, _ outcome: String, _ n: Int, at time: Date = minute) -> RefusalCount {
                RefusalCount(
                    minute: time, productId: product, endpoint: "/device/register", outcome: outcome,
                    remoteAddress: "10.0.0.1", count: n)
            }
            try await store.recordRefusals([count("", "InvalidParameter", 3), count("P1", "SignatureFailure", 2)])
            // The same minute again adds up (another flush, another instance); a later minute is a row of its own.
            try await store.recordRefusals([
                count("", "InvalidParameter", 4), count("", "InvalidParameter", 1, at: minute.addingTimeInterval(60)),
            ])
            try await store.recordRefusals([])
            let all = try await store.refusals(productId: nil, limit: 10)
            #expect(all.first == count("", "InvalidParameter", 1, at: minute.addingTimeInterval(60)))
            #expect(Set(all.dropFirst()) == [count("", "InvalidParameter", 7), count("P1", "SignatureFailure", 2)])
            #expect(try await store.refusals(productId: "P1", limit: 10) == [count("P1", "SignatureFailure", 2)])
            #expect(try await store.refusals(productId: "", limit: 10).map(\.count) == [1, 7])
            #expect(try await store.refusals(productId: nil, limit: 1).count == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func eventsPageFilterAndExpire(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            let t0 = StoreSamples.t0
            for index in 0..<6 {
                try await store.recordEvent(
                    RegistrationEvent(
                        time: t0.addingTimeInterval(Double(index) * 3600), productId: "P1", deviceName: "d\(index % 2)",
                        outcome: index % 3 == 0 ? "Success" : "InternalError", remoteAddress: "10.0.0.1",
                        endpoint: "/device/register"))
            }
            try await store.recordEvent(
                RegistrationEvent(
                    time: t0, productId: "P2", deviceName: "d0", outcome: "Success", remoteAddress: "a",
                    endpoint: "/device/register"))
            let all = try await store.events(productId: "P1", EventQuery(limit: 10))
            #expect(all.map(\.deviceName) == ["d1", "d0", "d1", "d0", "d1", "d0"])
            // A page at a time: the cursor is the last id of the page before.
            let first = try await store.events(productId: "P1", EventQuery(limit: 4))
            let rest = try await store.events(productId: "P1", EventQuery(limit: 4, before: first.last?.id))
            #expect(first + rest == all)
            #expect(
                try await store.events(productId: "P1", EventQuery(limit: 10, outcome: "Success")).count == 2)
            #expect(
                try await store.events(productId: "P1", EventQuery(limit: 10, deviceName: "d1")).count == 3)
            let since = try await store.events(
                productId: "P1", EventQuery(limit: 10, since: t0.addingTimeInterval(4 * 3600)))
            #expect(since.count == 2)

            try await store.recordRefusals([
                RefusalCount(
                    minute: t0, productId: "", endpoint: "/device/register", outcome: "InvalidParameter",
                    remoteAddress: "a", count: 1),
                RefusalCount(
                    minute: t0.addingTimeInterval(5 * 3600), productId: "", endpoint: "/device/register",
                    outcome: "InvalidParameter", remoteAddress: "a", count: 1),
            ])
            // Retention: everything before the cutoff goes, of every product, refusals included.
            let purge = try await store.purgeAudit(before: t0.addingTimeInterval(2.5 * 3600))
            #expect(purge == AuditPurge(events: 4, refusals: 1))
            #expect(try await store.events(productId: "P1", EventQuery(limit: 10)).count == 3)
            #expect(try await store.events(productId: "P2", EventQuery(limit: 10)).isEmpty)
            #expect(try await store.refusals(productId: nil, limit: 10).count == 1)
        }
    }

    @Test(arguments: StoreKind.allCases)
    func deviceCountsByStatus(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            #expect(try await store.deviceCounts().isEmpty)
            _ = try await store.createProduct(StoreSamples.product("P1"))
            for name in ["a", "b", "c"] {
                _ = try await store.createDevice(productId: "P1", deviceName: name, now: StoreSamples.t0)
            }
            _ = try await store.activateDevice(productId: "P1", deviceName: "a", now: StoreSamples.t0)
            #expect(try await store.deviceCounts() == [.created: 2, .activated: 1])
        }
    }

    @Test(arguments: StoreKind.allCases)
    func health(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            try await store.checkHealth()
        }
    }
}

/// Sends every attempt at once and returns the decisions in the order they came.
private func registerConcurrently(
    _ store: any RegistrationStore, _ attempts: [RegistrationAttempt]
) async throws -> [RegistrationDecision] {
    try await withThrowingTaskGroup(of: RegistrationDecision.self) { group in
        for attempt in attempts { group.addTask { try await store.register(attempt) } }
        return try await group.reduce(into: []) { $0.append($1) }
    }
}
