import GRDB
import ServiceLifecycle
import Synchronization

/// Group commit: concurrent writes share one transaction, so one fsync acknowledges many registrations.
///
/// `run()` is the only writer of the batches: while a transaction commits, new work queues up and goes into the
/// next one. Each item runs in its own savepoint, so one failing item does not fail the others. Nothing is
/// acknowledged before its transaction has committed.
///
/// Work queued before `run()` starts waits for it; work that comes after `run()` returned fails with
/// `unavailable`. At graceful shutdown (which a ServiceGroup gives the store after the HTTP server has drained)
/// `run()` commits what is queued and returns.
final class GroupCommitter: Sendable {
    typealias Work = @Sendable (Database) throws -> any Sendable

    private struct Item: Sendable {
        var work: Work
        var continuation: CheckedContinuation<any Sendable, any Error>
    }

    private enum Phase {
        case idle
        case running
        /// Shutdown asked: commit what is queued, then stop.
        case stopping
        case stopped
    }

    private struct State {
        var pending: [Item] = []
        var phase = Phase.idle
        /// `run()` waiting for work.
        var runner: CheckedContinuation<Void, Never>?
    }

    private let pool: DatabasePool
    private let maximumBatch: Int
    private let state = Mutex(State())
    private let metrics: StoreMetrics
    /// Set while commits fail for want of disk (or with I/O errors), cleared by the next commit that succeeds.
    private let writesFailing = Atomic<Bool>(false)

    init(pool: DatabasePool, maximumBatch: Int = 256, metrics: StoreMetrics = .none) {
        self.pool = pool
        self.maximumBatch = maximumBatch
        self.metrics = metrics
    }

    /// Whether the last commit failed because the disk is full or could not be written.
    var isFailingToWrite: Bool { writesFailing.load(ordering: .relaxed) }

    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let result = try await withCheckedThrowingContinuation { continuation in
            let (accepted, runner) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
                if case .stopped = state.phase { return (false, nil) }
                state.pending.append(Item(work: { try work($0) }, continuation: continuation))
                defer { state.runner = nil }
                return (true, state.runner)
            }
            if !accepted { continuation.resume(throwing: StoreError.stopped) }
            runner?.resume()
        }
        return result as! T
    }

    /// Commits batches until graceful shutdown or cancellation, then what is still queued.
    func run() async {
        let started = state.withLock { state in
            guard case .idle = state.phase else { return false }
            state.phase = .running
            return true
        }
        precondition(started, "GroupCommitter.run() runs once")
        await withTaskCancellationOrGracefulShutdownHandler {
            while let batch = await nextBatch() {
                await commit(batch)
            }
        } onCancelOrGracefulShutdown: {
            let runner = self.state.withLock { state -> CheckedContinuation<Void, Never>? in
                if case .running = state.phase { state.phase = .stopping }
                defer { state.runner = nil }
                return state.runner
            }
            runner?.resume()
        }
    }

    /// The next batch, waiting for work while running; `nil` once stopping with nothing queued.
    private func nextBatch() async -> [Item]? {
        while true {
            enum Next {
                case batch([Item])
                case wait
                case done
            }
            let next = state.withLock { state -> Next in
                if !state.pending.isEmpty {
                    let count = min(state.pending.count, maximumBatch)
                    let batch = Array(state.pending.prefix(count))
                    state.pending.removeFirst(count)
                    return .batch(batch)
                }
                if case .stopping = state.phase {
                    state.phase = .stopped
                    return .done
                }
                return .wait
            }
            switch next {
            case .batch(let batch): return batch
            case .done: return nil
            case .wait:
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state in
                        // Work or shutdown may have come since the check above.
                        if !state.pending.isEmpty || state.phase != .running { return true }
                        state.runner = continuation
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }

    private func commit(_ batch: [Item]) async {
        let works = batch.map(\.work)
        let started = ContinuousClock.now
        defer { metrics.committed(size: batch.count, elapsed: ContinuousClock.now - started) }
        do {
            // Under cancellation GRDB refuses the access: the batch fails, and nothing uncommitted is acknowledged.
            let results = try await pool.write { db in try Self.run(works, in: db) }
            writesFailing.store(false, ordering: .relaxed)
            for (item, result) in zip(batch, results) {
                item.continuation.resume(with: result)
            }
        } catch {
            if let error = error as? DatabaseError,
                [.SQLITE_FULL, .SQLITE_IOERR].contains(error.resultCode.primaryResultCode)
            {
                writesFailing.store(true, ordering: .relaxed)
            }
            for item in batch { item.continuation.resume(throwing: error) }
        }
    }

    private static func run(_ works: [Work], in db: Database) throws -> [Result<any Sendable, any Error>] {
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
}
