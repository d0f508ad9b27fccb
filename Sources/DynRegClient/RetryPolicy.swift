/// When and how often ``DeviceRegistrar`` sends a registration again.
///
/// Only failures that may pass retry: transport failures, `InternalError` and `RequestLimitExceeded`
/// (see ``RegistrationError/isRetryable``). The wait before retry *n* is drawn at random between half and all of
/// `min(maxDelay, baseDelay × 2^(n−1))`, so a fleet of devices that lost power together does not retry in step.
public struct RetryPolicy: Sendable, Hashable {
    /// The most requests sent for one registration, the first included. Default 4; 1 disables retries.
    public var maxAttempts: Int
    /// The wait before the first retry, before jitter. Default 500 ms.
    public var baseDelay: Duration
    /// The longest wait between two attempts. Default 8 s.
    public var maxDelay: Duration

    /// A policy; the defaults are those documented on each property.
    public init(maxAttempts: Int = 4, baseDelay: Duration = .milliseconds(500), maxDelay: Duration = .seconds(8)) {
        self.maxAttempts = maxAttempts
        self.baseDelay = baseDelay
        self.maxDelay = maxDelay
    }

    /// One attempt, no retry.
    public static let none = RetryPolicy(maxAttempts: 1)

    /// The wait before retry number `retry` (1 for the first retry).
    func delay(beforeRetry retry: Int, using generator: inout some RandomNumberGenerator) -> Duration {
        let base = max(0, baseDelay.seconds)
        let ceiling = min(max(0, maxDelay.seconds), base * Double(1 << min(max(retry - 1, 0), 30)))
        guard ceiling > 0 else { return .zero }
        return .seconds(ceiling / 2 + Double.random(in: 0...(ceiling / 2), using: &generator))
    }
}

extension Duration {
    var seconds: Double {
        Double(components.seconds) + Double(components.attoseconds) / 1e18
    }
}
