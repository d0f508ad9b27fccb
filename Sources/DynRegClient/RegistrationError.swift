public import DynRegProtocol

/// Why a registration, or loading or saving a credential, failed.
///
/// Switch on ``code`` to tell the cases apart:
///
/// - ``Code/rejected``: the platform answered with an error. ``platformCode``, ``message`` and ``requestId``
///   carry its answer, e.g. `AuthFailure.SignatureFailure`.
/// - ``Code/transport``: no usable answer: connection refused or dropped, timeout, TLS failure, or an HTTP error
///   status from a proxy in front of the platform.
/// - ``Code/undecodableAnswer``: an answer that is not a registration reply, or a payload that does not decrypt
///   to a credential (the usual sign of a wrong product secret).
/// - ``Code/invalidInput``: input refused before anything was sent.
/// - ``Code/credentialStore``: a ``CredentialStore`` could not load or save.
///
/// Descriptions never contain the product secret or the device's credential.
public struct RegistrationError: Error, Sendable, CustomStringConvertible {
    /// The kind of failure. A struct rather than an enum so that kinds can be added without breaking callers.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private enum Kind: String, Sendable, Hashable {
            case rejected, transport, undecodableAnswer, invalidInput, credentialStore
        }

        private let kind: Kind
        private init(_ kind: Kind) { self.kind = kind }

        /// The platform answered with an error; see ``RegistrationError/platformCode``.
        public static let rejected = Code(.rejected)
        /// The request got no usable answer: network error, timeout, TLS failure or an HTTP error status.
        public static let transport = Code(.transport)
        /// The answer is not a registration reply, or its payload does not decrypt to a credential.
        public static let undecodableAnswer = Code(.undecodableAnswer)
        /// The input was refused before sending: product id, device name, product secret, endpoint or trust roots.
        public static let invalidInput = Code(.invalidInput)
        /// A credential store failed to load or save.
        public static let credentialStore = Code(.credentialStore)

        /// The kind's name, e.g. `rejected`.
        public var description: String { kind.rawValue }
    }

    /// The kind of failure.
    public let code: Code
    /// What went wrong: the platform's message for ``Code/rejected``, otherwise a sentence for people.
    public let message: String
    /// The platform's error code for ``Code/rejected``, e.g. `AuthFailure.SignatureFailure`.
    ///
    /// For the legacy protocol this is the code that `RegistrationErrorCode.forLegacyCode(_:)` finds for the numeric
    /// code, or the number itself as text when the code is unknown; ``legacyCode`` keeps the number.
    public let platformCode: String?
    /// The numeric code of a legacy `/register/dev` answer, e.g. 1010.
    public let legacyCode: Int?
    /// The platform's request id, to quote when asking the operator what happened.
    public let requestId: String?
    /// The HTTP status of the answer, when there was one.
    public let httpStatus: Int?
    /// The lower-level error, such as an `HTTPClientError` for ``Code/transport``.
    public let underlying: (any Error)?
    /// How many requests were sent before giving up (0 when the input was refused).
    public internal(set) var attempts: Int

    init(
        _ code: Code, _ message: String, platformCode: String? = nil, legacyCode: Int? = nil,
        requestId: String? = nil, httpStatus: Int? = nil, underlying: (any Error)? = nil, attempts: Int = 0
    ) {
        self.code = code
        self.message = message
        self.platformCode = platformCode
        self.legacyCode = legacyCode
        self.requestId = requestId
        self.httpStatus = httpStatus
        self.underlying = underlying
        self.attempts = attempts
    }

    /// The project's description of ``platformCode``, when it is one of the documented codes.
    public var registrationErrorCode: RegistrationErrorCode? {
        platformCode.flatMap(RegistrationErrorCode.forCode)
    }

    /// Whether sending the same registration again later may succeed: transport failures, and platform answers
    /// whose code `RegistrationErrorCode.isRetryable(code:)` calls retryable (`InternalError`,
    /// `RequestLimitExceeded` and their details). Signature, product and device errors never are.
    public var isRetryable: Bool {
        if code == .transport { return true }
        guard code == .rejected, let platformCode else { return false }
        return RegistrationErrorCode.isRetryable(code: platformCode)
    }

    /// Whether the platform refused the request's timestamp (`AuthFailure.SignatureExpire`, legacy 1011).
    var isSignatureExpired: Bool {
        code == .rejected && platformCode == RegistrationErrorCode.signatureExpire.code
    }

    /// One line for people: the platform's code and message, or what failed, with the request id.
    public var description: String {
        var text: String
        switch code {
        case .rejected:
            text = platformCode ?? "rejected"
            if let legacyCode, String(legacyCode) != platformCode { text += " (\(legacyCode))" }
            if !message.isEmpty { text += ": " + message }
        case .transport:
            text = "could not reach the registration server: " + message
        default:
            text = message
        }
        var details: [String] = []
        if let requestId, !requestId.isEmpty { details.append("request id \(requestId)") }
        if attempts > 1 { details.append("after \(attempts) attempts") }
        if !details.isEmpty { text += " (" + details.joined(separator: ", ") + ")" }
        return text
    }
}
