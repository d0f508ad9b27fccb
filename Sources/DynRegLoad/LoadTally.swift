import Atomics
package import Histogram

/// Shared by every connection: which device comes next and how many are done.
package final class LoadCounters: Sendable {
    package let total: Int
    private let nextIndex = ManagedAtomic<Int>(0)
    private let completedCount = ManagedAtomic<Int>(0)

    package init(total: Int) { self.total = total }

    /// Claims the next device index, or `nil` when all are claimed.
    package func claim() -> Int? {
        let index = nextIndex.loadThenWrappingIncrement(ordering: .relaxed)
        return index < total ? index : nil
    }

    package var completed: Int { completedCount.load(ordering: .relaxed) }

    package func complete() { completedCount.wrappingIncrement(ordering: .relaxed) }
}

/// Latencies in microseconds and outcome counts.
package struct LoadTally: Sendable {
    package static let success = "Success"
    package static let transportError = "TransportError"

    package private(set) var histogram: Histogram<UInt64>
    package private(set) var successes = 0
    package private(set) var failures: [String: Int] = [:]
    package private(set) var firstTransportError: String?

    /// `timeout` in seconds bounds the latencies the histogram must hold.
    package init(timeout: Int) {
        histogram = Histogram(
            highestTrackableValue: UInt64(timeout + 60) * 1_000_000, numberOfSignificantValueDigits: .three)
    }

    /// One answered request; a `nil` outcome is a success.
    package mutating func record(outcome: String?, micros: Int64) {
        _ = histogram.record(UInt64(max(1, micros)))
        if let outcome { failures[outcome, default: 0] += 1 } else { successes += 1 }
    }

    package mutating func recordTransportError(_ description: String) {
        failures[Self.transportError, default: 0] += 1
        if firstTransportError == nil { firstTransportError = description }
    }

    package mutating func add(_ other: LoadTally) {
        histogram.add(other.histogram)
        successes += other.successes
        failures.merge(other.failures, uniquingKeysWith: +)
        if firstTransportError == nil { firstTransportError = other.firstTransportError }
    }

    package var requests: Int { successes + failures.values.reduce(0, +) }

    package var outcomes: [String: Int] {
        var all = failures
        if successes > 0 { all[Self.success] = successes }
        return all
    }

    /// Success first, then by count, then by name.
    package var sortedOutcomes: [(String, Int)] {
        let rest = failures.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        return (successes > 0 ? [(Self.success, successes)] : []) + rest.map { ($0.key, $0.value) }
    }

    package func millis(_ percentile: Double) -> Double {
        histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1000
    }

    package var maxMillis: Double { histogram.totalCount == 0 ? 0 : Double(histogram.max) / 1000 }
}

package struct LoadResult: Sendable {
    package var tally: LoadTally
    package var durationSeconds: Double

    /// Every outcome counts, transport errors included.
    package var requestsPerSecond: Double { Double(tally.requests) / max(durationSeconds, 1e-9) }
}
