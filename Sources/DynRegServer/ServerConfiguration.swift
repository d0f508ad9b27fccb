public import DynRegCA
public import Foundation

/// How `dynreg serve` runs. Only the command line reads flags and the environment; this is what it produces.
public struct ServerConfiguration: Sendable {
    /// Address to bind; loopback by default so nothing is exposed by accident.
    public var host: String = "127.0.0.1"
    /// Port to bind; 0 picks a free one (the chosen port is reported once listening).
    public var port: Int = 8080
    /// Seconds a request timestamp may differ from the server clock, either way.
    public var timestampWindow: Int64 = 300
    /// Host names a signature may name besides the `Host` header's: SDKs that always sign the public gateway.
    public var publicHosts: [String] = ServerConfiguration.defaultPublicHosts
    /// PEM certificate chain and key to serve HTTPS; both or neither.
    public var tls: TLSFiles?
    /// The bearer token of the admin API. Secret: never logged.
    public var adminToken: String
    /// Seals product CA keys at rest. Every instance on one database needs the same key.
    public var masterKey: MasterKey
    /// Largest device request body accepted.
    public var maxDeviceBodySize: Int = 4096

    public struct TLSFiles: Sendable {
        public var certificatePath: String
        public var keyPath: String
        public init(certificatePath: String, keyPath: String) {
            self.certificatePath = certificatePath
            self.keyPath = keyPath
        }
    }

    public static let defaultPublicHosts = ["ap-guangzhou.gateway.tencentdevices.com"]

    public init(adminToken: String, masterKey: MasterKey) {
        self.adminToken = adminToken
        self.masterKey = masterKey
    }
}
