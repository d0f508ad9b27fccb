import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

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

/// An exclusive `flock` on a file beside the database, held for the store's lifetime.
final class FileLock: Sendable {
    private let descriptor: Int32

    init(path: String) throws {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else {
            throw StoreError(.unavailable, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let reason = errno == EWOULDBLOCK
                ? "another dynreg server (or another store in this process) has this database open"
                : String(cString: strerror(errno))
            close(descriptor)
            throw StoreError(.unavailable, "cannot lock \(path): \(reason)")
        }
        self.descriptor = descriptor
    }

    deinit {
        close(descriptor)
    }
}
