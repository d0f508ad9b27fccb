package import CoreMetrics

/// What a store reports through swift-metrics: the size of each group commit and how long it took.
///
/// The server passes its Prometheus factory; without one, nothing is recorded.
package struct StoreMetrics: Sendable {
    package static let commitDuration = "dynreg_store_commit_duration_seconds"
    package static let batchSize = "dynreg_store_commit_batch_size"

    private let duration: CoreMetrics.Timer?
    private let batch: Recorder?

    package init(factory: (any MetricsFactory)?) {
        guard let factory else {
            duration = nil
            batch = nil
            return
        }
        duration = CoreMetrics.Timer(label: Self.commitDuration, dimensions: [], factory: factory)
        batch = Recorder(label: Self.batchSize, dimensions: [], aggregate: true, factory: factory)
    }

    package static let none = StoreMetrics(factory: nil)

    /// One transaction of `size` writes that committed (or failed) after `elapsed`.
    package func committed(size: Int, elapsed: Duration) {
        batch?.record(size)
        duration?.recordNanoseconds(elapsed.nanoseconds)
    }
}

extension Duration {
    var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1_000_000_000 + attoseconds / 1_000_000_000
    }
}
