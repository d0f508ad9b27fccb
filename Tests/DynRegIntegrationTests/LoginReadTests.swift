import DynRegStore
import DynRegTestSupport
import Foundation
import Testing

/// A broker login reads the device through `deviceForLogin`, which may answer from memory: every committed change
/// must show on the very next login, on every store.
@Suite("Device reads for broker logins")
struct LoginReadTests {
    @Test(arguments: StoreKind.allCases)
    func everyCommittedChangeShowsOnTheNextLogin(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("PL")) { store in
            func login(_ name: String = "d1") async throws -> Device? {
                try await store.deviceForLogin(productId: "PL", deviceName: name)
            }
            // A device that does not exist yet is not remembered as missing.
            #expect(try await login() == nil)
            _ = try await store.createDevice(productId: "PL", deviceName: "d1", now: StoreSamples.t0)
            #expect(try await login()?.status == .created)
            #expect(try await login()?.psk == nil)

            guard case .issued = try await store.register(StoreSamples.attempt("PL", "d1", nonce: 1, psk: "psk-one"))
            else { throw Failure("the first registration was not issued") }
            #expect(try await login()?.psk == "psk-one")
            #expect(try await login()?.status == .registered)

            _ = try await store.activateDevice(productId: "PL", deviceName: "d1", now: StoreSamples.t0)
            #expect(try await login()?.status == .activated)

            _ = try await store.resetDevice(productId: "PL", deviceName: "d1")
            #expect(try await login()?.status == .created)
            #expect(try await login()?.psk == nil)

            guard case .issued = try await store.register(StoreSamples.attempt("PL", "d1", nonce: 2, psk: "psk-two"))
            else { throw Failure("the registration after the reset was not issued") }
            #expect(try await login()?.psk == "psk-two")
            #expect(try await login() == (try await store.device(productId: "PL", deviceName: "d1")))

            try await store.deleteDevice(productId: "PL", deviceName: "d1")
            #expect(try await login() == nil)

            // Deleting the product forgets its devices too.
            guard case .issued = try await store.register(StoreSamples.attempt("PL", "d2", nonce: 3, psk: "psk-d2"))
            else { throw Failure("d2 was not issued") }
            #expect(try await login("d2")?.psk == "psk-d2")
            try await store.deleteProduct(id: "PL")
            #expect(try await login("d2") == nil)
        }
    }

    /// Logins racing registrations and resets of the same devices: once the writes are done, every login reads
    /// what the store holds. A cached read that began before a write and finished after it would show here.
    @Test(arguments: StoreKind.allCases)
    func loginsRacingWritesEndAtTheStoredRow(_ kind: StoreKind) async throws {
        try await withStore(kind, product: StoreSamples.product("PR")) { store in
            let names = (0..<8).map { "race\($0)" }
            try await withThrowingTaskGroup(of: Void.self) { group in
                for (index, name) in names.enumerated() {
                    group.addTask {
                        for round in 0..<12 {
                            let nonce = Int64(index * 1000 + round)
                            _ = try await store.register(
                                StoreSamples.attempt("PR", name, nonce: nonce, psk: "psk-\(name)-\(round)"))
                            if round % 3 == 2 { _ = try await store.resetDevice(productId: "PR", deviceName: name) }
                        }
                    }
                    group.addTask {
                        for _ in 0..<60 { _ = try await store.deviceForLogin(productId: "PR", deviceName: name) }
                    }
                }
                try await group.waitForAll()
            }
            for name in names {
                let stored = try await store.device(productId: "PR", deviceName: name)
                #expect(stored != nil)
                #expect(try await store.deviceForLogin(productId: "PR", deviceName: name) == stored, "\(name)")
            }
        }
    }
}

private struct Failure: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
