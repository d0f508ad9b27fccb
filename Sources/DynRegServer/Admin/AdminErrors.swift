import DynRegProtocol
import DynRegStore
import Foundation
import HTTPTypes

/// The admin API's error codes, each with its one HTTP status. Every code has a row in docs/errors.md
/// ("Admin API errors"); a test keeps the two in step. Clients match on `code`, never on the message.
struct AdminErrorCode: Sendable, Hashable, CustomStringConvertible {
    let code: String
    let status: HTTPResponse.Status

    private init(_ code: String, _ status: HTTPResponse.Status) {
        self.code = code
        self.status = status
    }

    var description: String { code }

    static let invalidBody = Self("InvalidBody", .badRequest)
    static let invalidName = Self("InvalidName", .badRequest)
    static let invalidQuota = Self("InvalidQuota", .badRequest)
    static let invalidValidity = Self("InvalidValidity", .badRequest)
    static let invalidAuthType = Self("InvalidAuthType", .badRequest)
    static let invalidKeyType = Self("InvalidKeyType", .badRequest)
    static let invalidCertificateAuthority = Self("InvalidCertificateAuthority", .badRequest)
    static let invalidStatus = Self("InvalidStatus", .badRequest)
    static let invalidTopicRule = Self("InvalidTopicRule", .badRequest)
    static let invalidInput = Self("InvalidInput", .badRequest)
    static let invalidLimit = Self("InvalidLimit", .badRequest)
    /// The device protocol's code, so one name means one thing everywhere.
    static let deviceNameInvalid = Self(RegistrationErrorCode.deviceNameInvalid.code, .badRequest)
    static let unauthorized = Self("Unauthorized", .unauthorized)
    static let tooManyFailures = Self("TooManyFailures", .tooManyRequests)
    static let notFound = Self("NotFound", .notFound)
    static let conflict = Self("Conflict", .conflict)
    static let deviceQuota = Self(RegistrationErrorCode.deviceQuota.code, .conflict)
    static let internalError = Self("InternalError", .internalServerError)
    static let unavailable = Self("Unavailable", .serviceUnavailable)

    static let all: [Self] = [
        .invalidBody, .invalidName, .invalidQuota, .invalidValidity, .invalidAuthType, .invalidKeyType,
        .invalidCertificateAuthority, .invalidStatus, .invalidTopicRule, .invalidInput, .invalidLimit,
        .deviceNameInvalid,
        .unauthorized, .tooManyFailures, .notFound,
        .conflict, .deviceQuota, .internalError, .unavailable,
    ]
}

/// An admin failure: a code from the table and a message for people. `AdminErrorMiddleware` turns it into
/// the HTTP answer.
struct AdminError: Error, Sendable, Hashable, CustomStringConvertible {
    let code: AdminErrorCode
    let message: String
    /// Whole seconds, for a `Retry-After` header.
    var retryAfter: Int? = nil

    init(_ code: AdminErrorCode, _ message: String) {
        self.code = code
        self.message = message
    }

    /// Too many wrong tokens from this address: every admin request from it is refused for a while.
    static func locked(retryAfter seconds: TimeInterval) -> Self {
        var error = Self(.tooManyFailures, "too many failed admin logins from this address; retry later")
        error.retryAfter = max(1, Int(seconds.rounded(.up)))
        return error
    }

    var description: String { "\(code.code): \(message)" }

    static func productNotFound(_ id: String) -> Self { Self(.notFound, "product \(id) does not exist") }
    static func deviceNotFound(_ name: String) -> Self { Self(.notFound, "device \(name) does not exist") }

    /// The one translation of the store's errors into the admin API's.
    init(_ error: StoreError) {
        let code: AdminErrorCode
        switch error.code {
        case .productNotFound, .deviceNotFound, .certificateNotFound: code = .notFound
        case .deviceExists, .productExists: code = .conflict
        case .quotaExceeded: code = .deviceQuota
        case .invalidInput: code = .invalidInput
        case .unavailable: code = .unavailable
        }
        self.init(code, error.message)
    }
}
