import GRDB
import Synchronization

/// Group commit: concurrent writes share one transaction, so one fsync acknowledges many registrations.
///
/// `run()` is the only writer of the batches: while a transaction commits, new work queues up and goes into the
/// next one. A batch runs as one transaction; when an item fails, it runs again with each item in its own
/// savepoint, so one failing item does not fail the others. Nothing is acknowledged before its transaction has
/// committed.
///
/// Work queued before `run()` starts waits for it; work that comes after `run()` returned fails with
/// `unavailable`. At graceful shutdown (which a ServiceGroup gives the store after the HTTP server has drained)
/// `run()` commits what is queued and returns.
final class GroupCommitter: Sendable {
    typealias Work = @Sendable (Database) throws -> any Sendable

    private let pool: DatabasePool
    /// One batch at a time: SQLite has one writer.
    private let batches: CommitBatches<Work, any Sendable>
    private let metrics: StoreMetrics
    /// Set while commits fail for want of disk (or with I/O errors), cleared by the next commit that succeeds.
    private let writesFailing = Atomic<Bool>(false)

    init(pool: DatabasePool, maximumBatch: Int = 256, metrics: StoreMetrics = .none) {
        self.pool = pool
        self.batches = CommitBatches(maximumBatch: maximumBatch, concurrency: 1)
        self.metrics = metrics
    }

    /// Whether the last commit failed because the disk is full or could not be written.
    var isFailingToWrite: Bool { writesFailing.load(ordering: .relaxed) }

    func write<T: Sendable>(_ work: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await batches.submit({ try work($0) }) as! T
    }

    /// Commits batches until graceful shutdown or cancellation, then what is still queued.
    func run() async {
        await batches.run { works in await self.commit(works) }
    }

    private func commit(_ works: [Work]) async -> [Result<any Sendable, any Error>] {
        let started = ContinuousClock.now
        defer { metrics.committed(size: works.count, elapsed: ContinuousClock.now - started) }
        do {
            let results: [Result<any Sendable, any Error>]
            do {
                // Under cancellation GRDB refuses the access: the batch fails, and nothing uncommitted is acknowledged.
                results = try await pool.write { db in try works.map { work in .success(try work(db)) } }
            } catch  where works.count > 1 {
                // An item failed (or the commit did): the batch rolled back, and runs again with each item in a
                // savepoint of its own, so that only the failing item fails.
                results = try await pool.write { db in try Self.isolating(works, in: db) }
            }
            writesFailing.store(false, ordering: .relaxed)
            return results
        } catch {
            if let error = error as? DatabaseError,
                [.SQLITE_FULL, .SQLITE_IOERR].contains(error.resultCode.primaryResultCode)
            {
                writesFailing.store(true, ordering: .relaxed)
            }
            return works.map { _ in .failure(error) }
        }
    }

    /// Each item in a savepoint: only after a batch failed, because a savepoint makes SQLite copy every page an item
    /// changes that an earlier item had changed (its statement journal, on disk past 64 KiB): a few pages an item.
    private static func isolating(_ works: [Work], in db: Database) throws -> [Result<any Sendable, any Error>] {
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
