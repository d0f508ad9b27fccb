package import DynRegStore
import Foundation
package import Logging
import ServiceLifecycle

/// Forgets replay entries whose timestamps can no longer be accepted.
package struct NonceSweeper<Store: RegistrationStore>: Service {
    let store: Store
    let interval: Duration
    let logger: Logger

    package init(store: Store, interval: Duration = .seconds(60), logger: Logger) {
        self.store = store
        self.interval = interval
        self.logger = logger
    }

    package func run() async throws {
        // Sleeping must end at graceful shutdown, or stopping the server would wait out the interval.
        do {
            try await cancelWhenGracefulShutdown {
                while true {
                    try await Task.sleep(for: interval)
                    do {
                        let removed = try await store.purgeExpiredNonces(now: Date())
                        if removed > 0 {
                            logger.debug("purged expired nonces", metadata: ["dynreg.count": "\(removed)"])
                        }
                    } catch is CancellationError {
                        throw CancellationError()
                    } catch {
                        logger.warning("could not purge expired nonces")
                    }
                }
            }
        } catch is CancellationError {
            return
        }
    }
}
