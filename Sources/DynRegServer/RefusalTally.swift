import DynRegStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization

/// Counts registrations refused before the product secret was proven (junk, unknown products, wrong signatures) and
/// writes them as one row per minute and kind (``RefusalCount``): a request without a secret costs a counter
/// increment, never a row, whatever it sends.
///
/// A `Service`: writes each minute's counts when it ends, and what is left at shutdown. At most ``maxKeys`` kinds a
/// minute are kept apart; past that, further addresses are counted together as ``otherAddresses``.
final class RefusalTally: Service, Sendable {
    static let maxKeys = 1_000
    static let otherAddresses = "(other addresses)"

    private struct Key: Hashable {
        var productId: String
        var endpoint: String
        var outcome: String
        var remoteAddress: String
    }

    private struct Minute {
        var start: Int64
        var counts: [Key: Int] = [:]
    }

    private let write: @Sendable ([RefusalCount]) async throws -> Void
    private let clock: @Sendable () -> Date
    private let logger: Logger
    private let metrics: ServerMetrics
    private let current: Mutex<Minute>
    /// Minutes that ended and wait for `run()` to write them.
    private let ended = Mutex<[Minute]>([])

    init(
        metrics: ServerMetrics, logger: Logger, clock: @escaping @Sendable () -> Date = Date.init,
        write: @escaping @Sendable ([RefusalCount]) async throws -> Void
    ) {
        self.write = write
        self.clock = clock
        self.logger = logger
        self.metrics = metrics
        current = Mutex(Minute(start: Self.minute(clock())))
    }

    private static func minute(_ date: Date) -> Int64 { Int64(date.timeIntervalSince1970) / 60 * 60 }

    /// One refused request. `productId`: the product when it exists, else empty.
    func record(productId: String, endpoint: String, outcome: String, remoteAddress: String) {
        let now = Self.minute(clock())
        current.withLock { minute in
            if minute.start != now {
                let done = minute
                ended.withLock { $0.append(done) }
                minute = Minute(start: now)
            }
            var key = Key(productId: productId, endpoint: endpoint, outcome: outcome, remoteAddress: remoteAddress)
            if minute.counts[key] == nil, minute.counts.count >= Self.maxKeys {
                key.remoteAddress = Self.otherAddresses
            }
            minute.counts[key, default: 0] += 1
        }
    }

    /// Writes what it has counted every few seconds (the rows add up, so the lockouts of every instance see the
    /// counts of all), and at graceful shutdown.
    func run() async throws {
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            // Woken by shutdown, not only by the timer: a stop does not wait out the interval.
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: .seconds(5)) }
            await flush(includingCurrent: true)
        }
        await flush(includingCurrent: true)
    }

    /// Writes the minutes that ended (and the current one, when asked); tests call it to see the rows now.
    func flush(includingCurrent: Bool) async {
        var minutes = ended.withLock { pending in
            defer { pending = [] }
            return pending
        }
        if includingCurrent {
            let start = Self.minute(clock())
            minutes.append(
                current.withLock { minute in
                    defer { minute = Minute(start: start) }
                    return minute
                })
        }
        let rows = minutes.flatMap { minute in
            minute.counts.map { key, count in
                RefusalCount(
                    minute: Date(timeIntervalSince1970: TimeInterval(minute.start)), productId: key.productId,
                    endpoint: key.endpoint, outcome: key.outcome, remoteAddress: key.remoteAddress, count: count)
            }
        }
        guard !rows.isEmpty else { return }
        do {
            try await write(rows)
        } catch {
            // Counted, not retried: a store that cannot write has bigger problems, and /health says so.
            metrics.storeError("record_refusals")
            logger.warning(
                "could not write the refusal counts", metadata: ["dynreg.refusals": "\(rows.map(\.count).reduce(0, +))"]
            )
        }
    }
}
