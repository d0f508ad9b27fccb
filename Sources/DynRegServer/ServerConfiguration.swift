package import DynRegStore
package import Foundation

/// How `dynreg serve` runs. Only the command line reads flags and the environment; this is what it produces.
package struct ServerConfiguration: Sendable {
    /// Address to bind; loopback by default so nothing is exposed by accident.
    package var host: String = "127.0.0.1"
    /// Port to bind; 0 picks a free one (the chosen port is reported once listening).
    package var port: Int = 8080
    /// Seconds a request timestamp may differ from the server clock, either way.
    package var timestampWindow: Int64 = 300
    /// Host names a signature may name besides the `Host` header's: SDKs that always sign the public gateway.
    package var publicHosts: [String] = ServerConfiguration.defaultPublicHosts
    /// PEM certificate chain and key to serve HTTPS; both or neither.
    package var tls: TLSFiles?
    /// The bearer token of the admin API. Secret: never logged.
    /// The shortest admin or broker token `dynreg serve` accepts, in bytes: guessing is the only attack on it.
    package static let minimumTokenLength = 32

    package var adminToken: String
    /// What brokers present to the broker endpoints (Bearer, or Basic as the password). Secret: never logged.
    package var brokerToken: String
    /// A second token that may read `GET /metrics` (and nothing else), for Prometheus. Secret: never logged.
    package var metricsToken: String?
    /// Seals CA keys, product secrets and psks at rest. Every instance on one database needs the same key.
    package var masterKey: MasterKey
    /// Where to keep every certificate product's CA and CRL for brokers (`--crl-dir`), the command to run after
    /// each rewrite, and how often to rewrite when nothing changes.
    package var crlDirectory: URL?
    package var crlUpdatedCommand: String?
    package var crlRefresh: Duration = .seconds(3600)
    /// Largest device request body accepted.
    package var maxDeviceBodySize: Int = 4096
    /// Timeouts and the connection cap of the listener.
    package var connections = ConnectionLimits()
    /// The furthest an MQTT username's expiry may be from now for a broker login; `nil`: no cap.
    package var maxLoginLifetime: Duration?
    /// Rate limits per address and product, and the lockout after wrong signatures.
    package var limits = RegistrationLimits()
    /// How long audit events and refusal counts are kept (`--event-retention-days`).
    package var eventRetention: Duration = .seconds(90 * 86_400)
    /// Proxies whose `X-Forwarded-For` names the client (`--trusted-proxy`); none by default.
    package var trustedProxies: [AddressBlock] = []
    /// After SIGTERM, how long requests in progress may take before every connection is closed.
    package var shutdownGrace: Duration = .seconds(10)

    package struct TLSFiles: Sendable {
        package var certificatePath: String
        package var keyPath: String
        package init(certificatePath: String, keyPath: String) {
            self.certificatePath = certificatePath
            self.keyPath = keyPath
        }
    }

    /// Every gateway name Tencent's SDKs sign (PROTOCOL.md §5): the four regions, and the legacy path's name.
    package static let defaultPublicHosts = [
        "ap-guangzhou.gateway.tencentdevices.com", "us-east.gateway.tencentdevices.com",
        "europe.gateway.tencentdevices.com", "ap-bangkok.gateway.tencentdevices.com", "gateway.tencentdevices.com",
    ]

    package init(adminToken: String, brokerToken: String, masterKey: MasterKey) {
        self.adminToken = adminToken
        self.brokerToken = brokerToken
        self.masterKey = masterKey
    }
}
