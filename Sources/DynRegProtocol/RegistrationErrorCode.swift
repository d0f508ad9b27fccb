/// A stable error code of the registration endpoints, with its legacy numeric twin.
///
/// A struct rather than an enum so that codes can be added without breaking callers;
/// equality compares the code only.
public struct RegistrationErrorCode: Sendable, Hashable, CustomStringConvertible {
    /// The Tencent Cloud API 3.0 style code, e.g. `AuthFailure.SignatureFailure`.
    public let code: String
    /// The numeric `code` of the legacy `/register/dev` envelope.
    public let legacyCode: Int
    /// The message sent when nothing more specific is known.
    public let defaultMessage: String
    /// Whether a client may retry the same request later.
    public let isRetryable: Bool

    init(_ code: String, legacy: Int, message: String, retryable: Bool = false) {
        self.code = code
        self.legacyCode = legacy
        self.defaultMessage = message
        self.isRetryable = retryable
    }

    public var description: String { code }

    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.code == rhs.code }
    public func hash(into hasher: inout Hasher) { hasher.combine(code) }

    public static let invalidParameter = Self(
        "InvalidParameter", legacy: 1001, message: "the request is malformed")
    public static let deviceNameInvalid = Self(
        "InvalidParameterValue.DeviceNameInvalid", legacy: 1002,
        message: "device name must be 1-48 characters of A-Z a-z 0-9 _ - . : @")
    public static let productNotExist = Self(
        "ResourceNotFound.ProductNotExist", legacy: 1003, message: "product does not exist")
    public static let dynamicRegistrationDisabled = Self(
        "UnauthorizedOperation.DynamicRegistrationDisabled", legacy: 1004,
        message: "Not support dynamic device register, please check setting first")
    public static let signatureFailure = Self(
        "AuthFailure.SignatureFailure", legacy: 1010, message: "Check signature failed")
    public static let signatureExpire = Self(
        "AuthFailure.SignatureExpire", legacy: 1011,
        message: "the request timestamp is outside the accepted window; check the device clock")
    public static let nonceReused = Self(
        "AuthFailure.NonceReused", legacy: 1012,
        message: "this timestamp and nonce were already used; send a fresh nonce")
    public static let deviceNotExist = Self(
        "ResourceNotFound.DeviceNotExist", legacy: 1020, message: "Pre create mode: device not exists")
    public static let deviceAlreadyActivated = Self(
        "FailedOperation.DeviceAlreadyActivated", legacy: 1021,
        message: "the device is already activated; an operator must reset or delete it before it can register again")
    public static let deviceQuota = Self(
        "LimitExceeded.DeviceQuota", legacy: 1022, message: "the product has reached its device quota")
    public static let csrInvalid = Self(
        "InvalidParameterValue.CsrInvalid", legacy: 1030,
        message: "the CSR is not a valid PEM PKCS#10 request with a good signature")
    public static let csrSubjectMismatch = Self(
        "InvalidParameterValue.CsrSubjectMismatch", legacy: 1031,
        message: "the CSR subject common name must be the product id followed by the device name")
    public static let clientCertInvalid = Self(
        "InvalidParameterValue.ClientCertInvalid", legacy: 1032,
        message: "ClientCert must be a valid client certificate for this device from a CA the product trusts")
    public static let requestLimitExceeded = Self(
        "RequestLimitExceeded", legacy: 1090, message: "too many requests; retry later", retryable: true)
    public static let internalError = Self(
        "InternalError", legacy: 1000, message: "internal error; retry later", retryable: true)

    /// Every code the server can send, for documentation and lookup.
    public static let all: [Self] = [
        .invalidParameter, .deviceNameInvalid, .productNotExist, .dynamicRegistrationDisabled,
        .signatureFailure, .signatureExpire, .nonceReused, .deviceNotExist, .deviceAlreadyActivated,
        .deviceQuota, .csrInvalid, .csrSubjectMismatch, .clientCertInvalid, .requestLimitExceeded, .internalError,
    ]

    /// The code for a legacy numeric code, if it is one of ours.
    public static func forLegacyCode(_ legacyCode: Int) -> Self? {
        all.first { $0.legacyCode == legacyCode }
    }

    /// The code for a textual code, if it is one of ours.
    public static func forCode(_ code: String) -> Self? {
        all.first { $0.code == code }
    }

    /// Whether an answer with the textual `code` may succeed if the same request is sent again later.
    ///
    /// A documented code answers with its ``isRetryable``. Tencent's codes are `Family.Detail`, and its gateways
    /// send details this project does not list (`InternalError.DbError`), so an unknown code answers as its
    /// family does when that is a documented code; any other unknown code is not retryable.
    public static func isRetryable(code: String) -> Bool {
        if let known = forCode(code) { return known.isRetryable }
        guard let dot = code.firstIndex(of: "."), let family = forCode(String(code[..<dot])) else { return false }
        return family.isRetryable
    }
}
