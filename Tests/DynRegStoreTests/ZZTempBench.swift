import DynRegStore
import Foundation
import Testing

@Suite struct ZZTempBench {
    @Test(arguments: StoreKind.allCases)
    func bench(_ kind: StoreKind) async throws {
        try await withStore(kind) { store in
            _ = try await store.createProduct(StoreConformanceTests.product("P1"))
            let clock = ContinuousClock()
            var start = clock.now
            for i in 0..<300 { _ = try await store.register(StoreConformanceTests.attempt("P1", "s-\(i)", nonce: Int64(i))) }
            print("\(kind) sequential 300 new: \(clock.now - start)")
            start = clock.now
            try await withThrowingTaskGroup(of: Void.self) { group in
                for i in 0..<500 { group.addTask { _ = try await store.register(StoreConformanceTests.attempt("P1", "c-\(i)", nonce: Int64(i))) } }
                try await group.waitForAll()
            }
            print("\(kind) concurrent 500 new: \(clock.now - start)")
            start = clock.now
            for i in 0..<300 { _ = try await store.product(id: "P1"); _ = i }
            print("\(kind) 300 product reads: \(clock.now - start)")
        }
    }
}
