package import DynRegProtocol
package import Foundation

/// The registration rules that do not depend on HTTP or on where the data is kept, in the order they apply.
///
/// `RegistrationService` applies ``admit(product:timestamp:now:window:)`` to a request whose signature verified;
/// a store applies ``decide(product:device:replay:)`` inside the transaction that issues the credential.
/// PostgreSQL's `dynreg_register` (DynRegPostgres/Migrations.swift, v4) mirrors `decide` in PL/pgSQL, and
/// `dynreg_register_repeatable` (v5) wraps it with ``isRetry(recorded:registration:of:current:count:)``: a change
/// to one is a change to both, and to the table tests of both (RegistrationDecisionTests, StoreConformanceTests).
package enum RegistrationRules {
    /// What the service may go on with.
    package enum Admission: Sendable, Hashable {
        /// Issue a credential; the (timestamp, nonce) pair may be forgotten after `replayExpiry` (`nil`: kept until
        /// the device is activated, for devices without a clock).
        case proceed(replayExpiry: Date?)
        case refuse(RegistrationErrorCode)
    }

    /// The checks after the signature, before a credential is made: the timestamp window, then the product's
    /// switch. `window` is in seconds either side of `now`.
    package static func admit(product: Product, timestamp: Int64, now: Date, window: Int64) -> Admission {
        let replayExpiry: Date?
        if timestamp == 0 && product.allowClocklessDevices {
            replayExpiry = nil
        } else {
            let (skew, overflow) = Int64(now.timeIntervalSince1970).subtractingReportingOverflow(timestamp)
            guard !overflow, skew.magnitude <= window.magnitude else { return .refuse(.signatureExpire) }
            // Past this time the timestamp itself is refused, so the pair can be forgotten.
            replayExpiry = Date(timeIntervalSince1970: TimeInterval(timestamp) + TimeInterval(window) + 1)
        }
        guard product.dynamicRegistration else { return .refuse(.dynamicRegistrationDisabled) }
        return .proceed(replayExpiry: replayExpiry)
    }

    /// The product row a store decides on (locked, in a store with several writers).
    package struct ProductLimits: Sendable, Hashable {
        package var autoCreate: Bool
        /// `nil` for no limit.
        package var deviceQuota: Int?
        package var deviceCount: Int

        package init(autoCreate: Bool, deviceQuota: Int?, deviceCount: Int) {
            self.autoCreate = autoCreate
            self.deviceQuota = deviceQuota
            self.deviceCount = deviceCount
        }
    }

    /// Whether the (timestamp, nonce) pair is new for the device.
    package enum Replay: Sendable, Hashable {
        case fresh
        case reused
        /// Reused by a byte-identical repeat that ``isRetry(recorded:registration:of:current:count:)`` admits.
        case repeated
    }

    /// A reused pair is a retry when the request is byte-identical to the one that recorded it (`recorded` is
    /// that request's digest, `registration` the device's registration count it left) and its credential is
    /// still the device's: registered, and neither re-registered nor reset since. Anything else is a replay.
    package static func isRetry(
        recorded: [UInt8]?, registration: Int?, of digest: [UInt8]?, current status: DeviceStatus?, count: Int?
    ) -> Bool {
        guard let recorded, let digest, recorded == digest else { return false }
        return status == .registered && registration != nil && registration == count
    }

    /// A store's decision, named by the symbol PostgreSQL's `dynreg_register` returns for it.
    package enum Outcome: Sendable, Hashable {
        /// Issue the credential: update the device, or insert it when there was none.
        case issue
        /// Answer the recorded answer again; nothing changes but the audit log.
        case repeatAnswer
        case refuse(RegistrationErrorCode)

        /// The audit log's outcome and `dynreg_register`'s answer: `Success`, `Retry` or the protocol's error code.
        package var symbol: String {
            switch self {
            case .issue: return RegistrationEvent.success
            case .repeatAnswer: return RegistrationEvent.retry
            case .refuse(let code): return code.code
            }
        }

        /// The outcome a symbol names; `nil` for anything `decide` never answers.
        package init?(symbol: String) {
            if symbol == RegistrationEvent.success {
                self = .issue
            } else if symbol == RegistrationEvent.retry {
                self = .repeatAnswer
            } else if let code = RegistrationRules.storeRefusals.first(where: { $0.code == symbol }) {
                self = .refuse(code)
            } else {
                return nil
            }
        }
    }

    /// Every refusal ``decide(product:device:replay:)`` can answer, in the order it checks them.
    package static let storeRefusals: [RegistrationErrorCode] = [
        .productNotExist, .deviceAlreadyActivated, .deviceNotExist, .deviceQuota, .nonceReused,
    ]

    /// Existence, activation, quota and replay, for a registration of a device whose current status is `device`
    /// (`nil`: no such device yet).
    ///
    /// `replay` runs only when everything else admits: a store records the pair there, in the transaction that
    /// issues the credential, so a refused attempt leaves no trace to trip over.
    package static func decide(
        product: ProductLimits?, device: DeviceStatus?, replay: () throws -> Replay
    ) rethrows -> Outcome {
        guard let product else { return .refuse(.productNotExist) }
        switch device {
        case .activated:
            // Registration would hand a second credential to a device that is in use.
            return .refuse(.deviceAlreadyActivated)
        case .created, .registered:
            break
        case nil:
            guard product.autoCreate else { return .refuse(.deviceNotExist) }
            if let quota = product.deviceQuota, product.deviceCount >= quota { return .refuse(.deviceQuota) }
        }
        switch try replay() {
        case .fresh: return .issue
        case .repeated: return .repeatAnswer
        case .reused: return .refuse(.nonceReused)
        }
    }
}
