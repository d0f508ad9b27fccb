package import DynRegStore
import Foundation
package import PostgresNIO

extension PostgresStore {
    /// Where the database is and how to reach it; usually parsed from a URL.
    package struct Configuration: Sendable {
        /// How to use TLS, as libpq's `sslmode` names it.
        package enum TLSMode: String, Sendable, Hashable {
            /// Plain TCP: the default on loopback addresses.
            case disable
            /// TLS when the server offers it, certificate not checked: the default elsewhere (libpq's too).
            case prefer
            /// TLS required, certificate not checked.
            case require
            /// TLS required, certificate checked against the system's roots, host name not.
            case verifyCA = "verify-ca"
            /// TLS required, certificate and host name checked.
            case verifyFull = "verify-full"
        }

        package var host: String
        package var port: Int
        package var username: String
        /// A secret: never logged, never part of an error.
        package var password: String?
        package var database: String
        package var tls: TLSMode
        /// Connections each instance may open; several instances share the server's `max_connections`.
        package var maximumConnections: Int
        /// How long to wait for the server to answer a new connection, at start and in the pool.
        package var connectTimeout: Duration
        /// How long an operation waits for a pooled connection, while no other operation gets one either, before
        /// failing with `unavailable`: while the database is down, requests fail after this instead of queueing
        /// for the pool's minute of retries. A busy pool, still handing out connections, is waited for.
        package var leaseTimeout: Duration
        /// Devices each instance keeps for broker logins (``LoginListener``); 0 reads every login from the database.
        package var loginCacheCapacity = 100_000
        /// How often the login listener proves its connection delivers notifications.
        package var loginListenerHeartbeat = Duration.seconds(1)
        /// How long without a heartbeat back before the login cache goes off and the listener reconnects: the
        /// longest another instance's change can go unseen here when the listener's connection dies silently.
        package var loginListenerTimeout = Duration.seconds(3)
        /// The most registrations one transaction of the group commit holds: the product's row lock is held for
        /// the whole batch, so a bound keeps one batch from holding it long.
        package var registrationBatch = 128
        /// Batches of one instance in flight at once: while one commits, the next can wait for the lock.
        package var registrationBatchesInFlight = 2

        package init(
            host: String, port: Int = 5432, username: String, password: String?, database: String,
            tls: TLSMode? = nil, maximumConnections: Int = 20, connectTimeout: Duration = .seconds(10),
            leaseTimeout: Duration = .seconds(5)
        ) {
            self.host = host
            self.port = port
            self.username = username
            self.password = password
            self.database = database
            self.tls = tls ?? (Self.isLoopback(host) ? .disable : .prefer)
            self.maximumConnections = maximumConnections
            self.connectTimeout = connectTimeout
            self.leaseTimeout = leaseTimeout
        }

        /// Parses `postgres://user:password@host:port/database?sslmode=disable` (or `postgresql://`).
        ///
        /// User and password may be percent-encoded. Without `sslmode`, loopback hosts use plain TCP and other
        /// hosts prefer TLS. Errors never quote the password.
        package init(url: String) throws(StoreError) {
            let lower = url.lowercased()
            guard lower.hasPrefix("postgres://") || lower.hasPrefix("postgresql://"),
                let components = URLComponents(string: url)
            else {
                throw StoreError(
                    .invalidInput, "the database URL must look like postgres://user:password@host:5432/database")
            }
            guard let rawHost = components.host, !rawHost.isEmpty else {
                throw StoreError(.invalidInput, "the database URL has no host")
            }
            guard let username = components.user, !username.isEmpty else {
                throw StoreError(.invalidInput, "the database URL has no user name")
            }
            var host = rawHost
            if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
            let path = components.path.hasPrefix("/") ? String(components.path.dropFirst()) : components.path
            let database = path.removingPercentEncoding ?? path
            guard !database.contains("/") else {
                throw StoreError(.invalidInput, "the database URL's path must be a single database name")
            }
            var tls: TLSMode?
            for item in components.queryItems ?? [] {
                switch item.name {
                case "sslmode":
                    switch item.value ?? "" {
                    case "disable": tls = .disable
                    case "allow", "prefer": tls = .prefer
                    case "require": tls = .require
                    case "verify-ca": tls = .verifyCA
                    case "verify-full": tls = .verifyFull
                    default:
                        throw StoreError(
                            .invalidInput,
                            "sslmode must be disable, allow, prefer, require, verify-ca or verify-full")
                    }
                default:
                    throw StoreError(.invalidInput, "the database URL's parameter \(item.name) is not supported")
                }
            }
            self.init(
                host: host, port: components.port ?? 5432, username: username,
                password: components.password, database: database.isEmpty ? username : database, tls: tls)
        }

        /// The URL without the password, for logs and messages.
        package var redactedDescription: String {
            let shownHost = host.contains(":") ? "[\(host)]" : host
            return "postgres://\(username)@\(shownHost):\(port)/\(database)?sslmode=\(tls.rawValue)"
        }

        static func isLoopback(_ host: String) -> Bool {
            host == "localhost" || host == "::1" || host.hasPrefix("127.")
        }

        var clientConfiguration: PostgresClient.Configuration {
            var configuration = PostgresClient.Configuration(
                host: host, port: port, username: username, password: password, database: database,
                tls: clientTLS)
            configuration.options.maximumConnections = maximumConnections
            configuration.options.connectTimeout = connectTimeout
            return configuration
        }

        /// For the one connection opened at start, outside the pool.
        package func connectionConfiguration() throws -> PostgresConnection.Configuration {
            let connectionTLS: PostgresConnection.Configuration.TLS
            switch tls {
            case .disable: connectionTLS = .disable
            case .prefer: connectionTLS = .prefer(try NIOSSLContext(configuration: tlsConfiguration))
            case .require, .verifyCA, .verifyFull:
                connectionTLS = .require(try NIOSSLContext(configuration: tlsConfiguration))
            }
            var configuration = PostgresConnection.Configuration(
                host: host, port: port, username: username, password: password, database: database,
                tls: connectionTLS)
            configuration.options.connectTimeout = .nanoseconds(
                connectTimeout.components.seconds * 1_000_000_000 + connectTimeout.components.attoseconds
                    / 1_000_000_000)
            return configuration
        }

        private var clientTLS: PostgresClient.Configuration.TLS {
            switch tls {
            case .disable: return .disable
            case .prefer: return .prefer(tlsConfiguration)
            case .require, .verifyCA, .verifyFull: return .require(tlsConfiguration)
            }
        }

        private var tlsConfiguration: TLSConfiguration {
            var configuration = TLSConfiguration.makeClientConfiguration()
            switch tls {
            case .disable, .prefer, .require: configuration.certificateVerification = .none
            case .verifyCA: configuration.certificateVerification = .noHostnameVerification
            case .verifyFull: configuration.certificateVerification = .fullVerification
            }
            return configuration
        }
    }
}
