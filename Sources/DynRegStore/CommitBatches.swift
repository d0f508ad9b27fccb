import ServiceLifecycle
import Synchronization

/// The queue of a group commit: concurrent writes of one instance are handed to `commit` together, so they share
/// one transaction (SQLite's ``GroupCommitter``, PostgreSQL's registrations).
///
/// Up to `concurrency` batches are in flight; while they run, new attempts queue and go into the next one, so an
/// idle instance sends an attempt at once and a busy one sends up to `maximumBatch` per round trip. `commit`
/// answers each input of a batch; an input is answered only with what `commit` returns, after it returned.
///
/// Inputs submitted before `run` starts wait for it; after `run` returned they fail with `unavailable`. At
/// graceful shutdown (after the HTTP server drained) `run` commits what is queued and returns.
package final class CommitBatches<Input: Sendable, Output: Sendable>: Sendable {
    package typealias Commit = @Sendable ([Input]) async -> [Result<Output, any Error>]

    private struct Item: Sendable {
        var input: Input
        var continuation: CheckedContinuation<Output, any Error>
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
        /// Runners waiting for work.
        var runners: [CheckedContinuation<Void, Never>] = []
    }

    private enum Next {
        case batch([Item])
        case wait
        case done
    }

    private let maximumBatch: Int
    private let concurrency: Int
    private let state = Mutex(State())

    package init(maximumBatch: Int, concurrency: Int) {
        precondition(maximumBatch >= 1 && concurrency >= 1)
        self.maximumBatch = maximumBatch
        self.concurrency = concurrency
    }

    package func submit(_ input: Input) async throws -> Output {
        try await withCheckedThrowingContinuation { continuation in
            let (accepted, runner) = state.withLock { state -> (Bool, CheckedContinuation<Void, Never>?) in
                if case .stopped = state.phase { return (false, nil) }
                state.pending.append(Item(input: input, continuation: continuation))
                return (true, state.runners.popLast())
            }
            if !accepted { continuation.resume(throwing: StoreError.stopped) }
            runner?.resume()
        }
    }

    /// Commits batches with `commit` until graceful shutdown or cancellation, then what is still queued.
    package func run(commit: @escaping Commit) async {
        let started = state.withLock { state in
            guard case .idle = state.phase else { return false }
            state.phase = .running
            return true
        }
        precondition(started, "CommitBatches.run() runs once")
        await withTaskCancellationOrGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for _ in 0..<concurrency {
                    group.addTask {
                        while let batch = await self.nextBatch() {
                            let results = await commit(batch.map(\.input))
                            precondition(results.count == batch.count, "one answer per write")
                            for (item, result) in zip(batch, results) { item.continuation.resume(with: result) }
                        }
                    }
                }
            }
        } onCancelOrGracefulShutdown: {
            let runners = self.state.withLock { state -> [CheckedContinuation<Void, Never>] in
                if case .running = state.phase { state.phase = .stopping }
                defer { state.runners = [] }
                return state.runners
            }
            for runner in runners { runner.resume() }
        }
        // Whatever a runner left (none should): refused, not dropped.
        let left = state.withLock { state -> [Item] in
            state.phase = .stopped
            defer { state.pending = [] }
            return state.pending
        }
        for item in left { item.continuation.resume(throwing: StoreError.stopped) }
    }

    /// The next batch, oldest first, waiting for work while running; `nil` once stopping with nothing queued.
    private func nextBatch() async -> [Item]? {
        while true {
            let next = state.withLock { state -> Next in
                if !state.pending.isEmpty {
                    let count = min(state.pending.count, maximumBatch)
                    let batch = Array(state.pending.prefix(count))
                    state.pending.removeFirst(count)
                    return .batch(batch)
                }
                switch state.phase {
                case .stopping, .stopped:
                    // Nothing queued: refuse what comes now, which no runner would take.
                    state.phase = .stopped
                    return .done
                case .idle, .running:
                    return .wait
                }
            }
            switch next {
            case .batch(let batch): return batch
            case .done: return nil
            case .wait:
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLock { state in
                        // Work or shutdown may have come since the check above.
                        if !state.pending.isEmpty || state.phase != .running { return true }
                        state.runners.append(continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
    }
}
