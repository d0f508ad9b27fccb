import GRDB
import Synchronization

/// Group commit: concurrent writes share one transaction, so one fsync acknowledges many registrations.
///
/// Whoever finds the queue idle starts a drain; while a transaction commits, new work queues up and goes
/// into the next one. Each item runs in its own savepoint, so one failing item does not fail the others.
/// Nothing is acknowledged before its transaction has committed.
final class GroupCommitter: Sendable {
    typealias Work = @Sendable (Database) throws -> any Sendable

    private struct Item: Sendable {
        var work: Work
        var continuation: CheckedContinuation<any Sendable, any Error>
    }

    private struct State {
        var pending: [Item] = []
        var draining = false
    }

    private let pool: DatabasePool
    private let maximumBatch: Int
    private let state = Mutex(State())

    init(pool: DatabasePool, maximumBatch: Int = 256) {
        self.pool = pool
        self.maximumBatch = maximumBatch
    }

    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let result = try await withCheckedThrowingContinuation { continuation in
            let startDrain = state.withLock { state in
                state.pending.append(Item(work: { try work($0) }, continuation: continuation))
                if state.draining { return false }
                state.draining = true
                return true
            }
            if startDrain {
                Task { await self.drain() }
            }
        }
        return result as! T
    }

    private func drain() async {
        while true {
            let batch: [Item] = state.withLock { state in
                if state.pending.isEmpty {
                    state.draining = false
                    return []
                }
                let count = min(state.pending.count, maximumBatch)
                let batch = Array(state.pending.prefix(count))
                state.pending.removeFirst(count)
                return batch
            }
            if batch.isEmpty { return }
            let works = batch.map(\.work)
            do {
                let results = try await pool.write { db -> [Result<any Sendable, any Error>] in
                    // Prepared once per connection, unlike Database.inSavepoint's statements.
                    let begin = try db.cachedStatement(sql: "SAVEPOINT item")
                    let release = try db.cachedStatement(sql: "RELEASE SAVEPOINT item")
                    let rollback = try db.cachedStatement(sql: "ROLLBACK TO SAVEPOINT item")
                    var results: [Result<any Sendable, any Error>] = []
                    results.reserveCapacity(works.count)
                    for work in works {
                        try begin.execute()
                        do {
                            let value = try work(db)
                            try release.execute()
                            results.append(.success(value))
                        } catch let failure {
                            // If SQLite already rolled the whole transaction back (disk full, I/O error), these
                            // fail too: fail the batch with the cause, not with "no such savepoint".
                            do {
                                try rollback.execute()
                                try release.execute()
                            } catch {
                                throw failure
                            }
                            results.append(.failure(failure))
                        }
                    }
                    return results
                }
                for (item, result) in zip(batch, results) {
                    item.continuation.resume(with: result)
                }
            } catch {
                for item in batch { item.continuation.resume(throwing: error) }
            }
        }
    }
}
