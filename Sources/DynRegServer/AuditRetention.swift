import DynRegStore
import Foundation
import Logging
import ServiceLifecycle

/// Removes audit events, refusal counts and ended lockouts older than the retention (`--event-retention-days`,
/// default 90): soon after the start, then every hour.
struct AuditRetention: Service {
    let store: any RegistrationStore
    let retention: Duration
    let metrics: ServerMetrics
    let logger: Logger
    var interval: Duration = .seconds(3600)
    var clock: @Sendable () -> Date = Date.init

    func run() async throws {
        var wait: Duration = .seconds(60)
        while !Task.isShuttingDownGracefully, !Task.isCancelled {
            let pause = wait
            try? await cancelWhenGracefulShutdown { try await Task.sleep(for: pause) }
            guard !Task.isShuttingDownGracefully, !Task.isCancelled else { return }
            wait = interval
            await sweep()
        }
    }

    func sweep() async {
        let cutoff = clock().addingTimeInterval(-TimeInterval(retention.components.seconds))
        do {
            let purge = try await store.purgeAudit(before: cutoff)
            if purge.events + purge.refusals > 0 {
                logger.info(
                    "removed audit records past their retention",
                    metadata: ["dynreg.events": "\(purge.events)", "dynreg.refusals": "\(purge.refusals)"])
            }
        } catch {
            metrics.storeError("purge_audit")
            logger.warning("could not remove old audit records")
        }
    }
}
