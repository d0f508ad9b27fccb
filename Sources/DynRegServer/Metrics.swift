package import CoreMetrics
import DynRegProtocol
package import DynRegStore
import Foundation
import Hummingbird
import NIOCore
package import Prometheus
import Synchronization

/// What `GET /metrics` shows, in one Prometheus registry per server.
///
/// Labels stay bounded: endpoints, outcome codes, broker results and refusal reasons are fixed sets, and no label
/// ever holds a device name, a product id a client sent, or an address. The store's own metrics (group-commit
/// batches and commit latency) arrive through swift-metrics, by ``factory``.
package final class ServerMetrics: Sendable {
    package let registry: PrometheusCollectorRegistry
    /// For libraries that speak swift-metrics: the store's committer.
    package let factory: PrometheusMetricsFactory

    private let registrationDurations: [String: DurationHistogram]
    private let registrations = CounterFamily()
    private let brokerAnswers = CounterFamily()
    private let refusals = CounterFamily()
    private let storeErrors = CounterFamily()
    private let reregistrations: Prometheus.Counter
    private let lockouts: Prometheus.Counter
    private let devices: [DeviceStatus: Prometheus.Gauge]
    /// When the device counts were last read: counting scans the table, so at most every 15 s.
    private let deviceCountsRead = Mutex<ContinuousClock.Instant?>(nil)

    package init(version: String = dynregVersion) {
        let registry = PrometheusCollectorRegistry()
        self.registry = registry
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets[StoreMetrics.commitDuration] = Self.latencyBuckets
        factory.valueHistogramBuckets[StoreMetrics.batchSize] = [1, 2, 4, 8, 16, 32, 64, 128, 256]
        self.factory = factory
        let duration = Self.name(
            "registration_duration", unit: "seconds", "Time from a registration's body to its answer, by endpoint.")
        registrationDurations = Dictionary(
            uniqueKeysWithValues: [RegistrationPath.current, RegistrationPath.legacy].map { endpoint in
                let histogram = registry.makeDurationHistogram(
                    descriptor: duration, labels: [("endpoint", endpoint)], buckets: Self.latencyBuckets)
                return (endpoint, histogram)
            })
        reregistrations = registry.makeCounter(
            descriptor: Self.name(
                "reregistrations", unit: "total",
                "Registrations of a device that was registered already: its previous credential stopped working."))
        lockouts = registry.makeCounter(
            descriptor: Self.name(
                "lockouts", unit: "total", "Addresses locked out of a product after repeated wrong signatures."))
        let deviceGauge = Self.name("devices", unit: "", "Devices in the store by status, read at most every 15 s.")
        devices = Dictionary(
            uniqueKeysWithValues: DeviceStatus.allCases.map { status in
                (status, registry.makeGauge(descriptor: deviceGauge, labels: [("status", status.rawValue)]))
            })
        registry.makeGauge(
            descriptor: Self.name("build_info", unit: "", "Always 1; the labels say which dynreg this is."),
            labels: [("version", version)]
        ).set(Int64(1))
    }

    /// 1 ms to 5 s: a durable registration takes a few milliseconds, and a client gives up after seconds.
    static let latencyBuckets: [Duration] = [1, 2, 5, 10, 20, 50, 100, 250, 500, 1000, 2500, 5000].map {
        .milliseconds($0)
    }

    private static func name(_ metric: String, unit: String, _ help: String) -> MetricNameDescriptor {
        MetricNameDescriptor(namespace: "dynreg", metricName: metric, unitName: unit, helpText: help)
    }

    /// One answered registration: its endpoint (`/device/register` or `/register/dev`) and outcome code.
    /// `duration`: from the body's arrival to the answer; `nil` for a request refused before its body was read,
    /// which would only pull the latency histogram towards zero.
    package func registration(endpoint: String, outcome: String, duration: Duration?) {
        registrations.counter(
            Self.name("registrations", unit: "total", "Registration answers by endpoint and outcome code."),
            in: registry, [("endpoint", endpoint), ("outcome", outcome)]
        ).increment()
        if let duration { registrationDurations[endpoint]?.record(duration) }
    }

    /// For the store's initializer.
    package var storeMetrics: StoreMetrics { StoreMetrics(factory: factory) }

    package func reregistration() { reregistrations.increment() }

    /// An address locked out of a product after repeated wrong signatures.
    package func lockoutStarted() { lockouts.increment() }

    /// One broker-hook answer: `allow`, `deny` or `unauthorized` (no or a wrong broker token).
    package func brokerAnswer(endpoint: String, result: String) {
        brokerAnswers.counter(
            Self.name("broker_answers", unit: "total", "Broker-hook answers by endpoint and result."),
            in: registry, [("endpoint", endpoint), ("result", result)]
        ).increment()
    }

    /// Why a request was refused before it could do anything: see ``RefusalReason``.
    package func refusal(_ reason: RefusalReason) {
        refusals.counter(
            Self.name(
                "refusals", unit: "total",
                "Requests refused by a limit before any work: rate limits, lockouts, the new-device brake, tokens."),
            in: registry, [("reason", reason.rawValue)]
        ).increment()
    }

    /// A store call that failed (the store could not be reached, a disk is full): the operation names the call.
    package func storeError(_ operation: String) {
        storeErrors.counter(
            Self.name("store_errors", unit: "total", "Store calls that failed, by operation."),
            in: registry, [("operation", operation)]
        ).increment()
    }

    /// Whether the device counts are older than 15 s; if so, the caller reads them now.
    func deviceCountsDue() -> Bool {
        let now = ContinuousClock.now
        return deviceCountsRead.withLock { last in
            guard last.map({ now - $0 >= .seconds(15) }) ?? true else { return false }
            last = now
            return true
        }
    }

    package func setDeviceCounts(_ counts: [DeviceStatus: Int]) {
        for (status, gauge) in devices { gauge.set(Int64(counts[status] ?? 0)) }
    }

    /// Why a request was refused before any work.
    package enum RefusalReason: String, Sendable, CaseIterable {
        /// A missing or wrong broker token on a broker endpoint.
        case brokerToken = "broker_token"
        /// A missing or wrong admin (or metrics) token.
        case adminToken = "admin_token"
        /// An address locked for a while after too many wrong admin tokens.
        case adminLockout = "admin_lockout"
        /// A registration over its client address's rate.
        case addressRate = "address_rate"
        /// A registration over its product's rate.
        case productRate = "product_rate"
        /// A registration from an address locked out of the product after wrong signatures.
        case lockedOut = "locked_out"
        /// A new device name past the product's new-devices-per-hour brake.
        case newDeviceBrake = "new_device_brake"
    }
}

/// Counters of one name, kept by label values: the registry's own lookup sanitises names on every call.
private final class CounterFamily: Sendable {
    private let counters = Mutex<[[String]: Prometheus.Counter]>([:])

    func counter(
        _ descriptor: @autoclosure () -> MetricNameDescriptor, in registry: PrometheusCollectorRegistry,
        _ labels: [(String, String)]
    ) -> Prometheus.Counter {
        let key = labels.map(\.1)
        if let known = counters.withLock({ $0[key] }) { return known }
        let made = registry.makeCounter(descriptor: descriptor(), labels: labels)
        counters.withLock { $0[key] = made }
        return made
    }
}

/// The version `dynreg_build_info` reports.
package let dynregVersion = "0.3.0"

/// `GET /metrics`: Prometheus's text format, behind the admin token or `--metrics-token`.
struct MetricsRoute<Store: RegistrationStore>: Sendable {
    let metrics: ServerMetrics
    let store: Store
    let authentication: BearerTokenMiddleware

    func register(on router: Router<DynRegRequestContext>) {
        let group = router.group()
        group.add(middleware: AdminErrorMiddleware())
        group.add(middleware: authentication)
        group.get("/metrics") { _, _ -> Response in
            await refreshDeviceCounts()
            return Response(
                status: .ok, headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: metrics.registry.emitToBuffer())))
        }
    }

    private func refreshDeviceCounts() async {
        guard metrics.deviceCountsDue() else { return }
        do {
            metrics.setDeviceCounts(try await store.deviceCounts())
        } catch {
            metrics.storeError("device_counts")
        }
    }
}
