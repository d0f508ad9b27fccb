import Foundation
import Synchronization

/// Products by id, for the checks on device requests: saves a database read on every registration.
///
/// Holds only products that exist, so its size is bounded by the product table, not by what devices send.
/// `invalidate()` after every committed product write; a read that raced with a write is not cached, because
/// the generation it started at is gone.
final class ProductCache: Sendable {
    private struct State {
        var products: [String: Product] = [:]
        var generation: UInt64 = 0
    }

    private let state = Mutex(State())

    var generation: UInt64 { state.withLock { $0.generation } }

    func product(id: String) -> Product? {
        state.withLock { $0.products[id] }
    }

    func store(_ product: Product, ifStillAt generation: UInt64) {
        state.withLock { state in
            if state.generation == generation { state.products[product.id] = product }
        }
    }

    func invalidate() {
        state.withLock { state in
            state.products.removeAll(keepingCapacity: true)
            state.generation &+= 1
        }
    }
}
