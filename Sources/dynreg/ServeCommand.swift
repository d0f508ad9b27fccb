import ArgumentParser
import DynRegCA
import DynRegPostgres
import DynRegServer
import DynRegStore
import Foundation
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the registration server (SQLite in the data directory by default).",
        discussion: """
            The admin token is DYNREG_ADMIN_TOKEN, or else a random token written to <data-dir>/admin-token \
            (mode 0600) on first start. The master key that seals product secrets, device psks and CA keys is \
            DYNREG_MASTER_KEY (32 bytes, Base64), or else <data-dir>/master-key, created on first start (mode 0600): \
            back it up, without it nothing in the store can be opened. The data directory is made 0700 and the \
            database files 0600. On its first start with an empty store the server creates a demo product \
            and prints how to register a device with it.
            """
    )

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind; 0 picks a free one.") var port = 8080
    @Option(help: "Directory for the database and the admin token; created if missing.") var dataDir = "./dynreg-data"
    @Option(
        help: """
            The token brokers present to the broker endpoints (or DYNREG_BROKER_TOKEN); default: a random one in \
            <data-dir>/broker-token.
            """)
    var brokerToken: String?
    @Option(
        help: """
            A token Prometheus may present (Bearer) to read GET /metrics, and nothing else (or DYNREG_METRICS_TOKEN);             the admin token reads it too.
            """)
    var metricsToken: String?
    @Option(
        help: """
            Keep every certificate product's CA and CRL in DIR for brokers that check client certificates (Mosquitto): \
            <productId>.ca.pem, <productId>.crl.pem, ca-bundle.pem, crl-bundle.pem; rewritten on every revocation.
            """)
    var crlDir: String?
    @Option(help: "Run this (sh -c) after each rewrite of --crl-dir, e.g. \"kill -HUP $(cat /run/mosquitto.pid)\".")
    var crlUpdatedCommand: String?
    @Option(help: "Seconds between rewrites of --crl-dir when nothing changes (CRLs are valid 7 days).")
    var crlRefresh = 3600
    @Option(help: "Seconds a request timestamp may differ from the server clock.") var timestampWindow: Int64 = 300
    @Option(
        name: .customLong("public-host"),
        help: """
            A host name signatures may name besides the Host header's (repeatable). Replaces the default list: \
            ap-guangzhou, us-east, europe and ap-bangkok .gateway.tencentdevices.com, and \
            gateway.tencentdevices.com, the names Tencent's SDKs sign.
            """)
    var publicHosts: [String] = []
    @Option(help: "Seconds a kept-alive connection may wait for its next request.") var idleTimeout = 60
    @Option(
        help: "Seconds a request (with its TLS handshake, head and body) has to arrive, from its first byte.")
    var requestTimeout = 10
    @Option(
        help: ArgumentHelp(
            "Connections at once; one more is closed as soon as it is accepted.",
            discussion:
                "Default: the file-descriptor limit (raised to its hard limit at start) less 128, at most 16384."))
    var maxConnections: Int?
    @Option(
        help: ArgumentHelp(
            "Refuse broker logins whose MQTT username expires more than this many seconds from now.",
            discussion: "Off by default: some SDKs send far-future or millisecond expiries."))
    var maxLoginLifetime: Int?
    @Option(help: "Seconds requests in progress get after SIGTERM before every connection is closed.")
    var shutdownGrace = 10
    @Option(
        help: ArgumentHelp(
            "Registrations a second from one client address, as RATE/BURST; 0 for no limit.",
            discussion: "Default 20/200: a factory line behind one NAT address stays well under it."))
    var addressRateLimit = "20/200"
    @Option(help: "Registrations a second for one product, as RATE/BURST, unless the product sets its own; 0 for none.")
    var productRateLimit = "200/2000"
    @Option(help: "Wrong signatures from one address for one product that lock the address out of it; 0: never.")
    var lockoutFailures = 20
    @Option(help: "Seconds within which --lockout-failures wrong signatures lock an address out.")
    var lockoutWindow = 600
    @Option(help: "Seconds a lockout lasts.") var lockoutDuration = 600
    @Option(help: "Days audit events and refusal counts are kept; older ones are removed every hour.")
    var eventRetentionDays = 90
    @Option(
        name: .customLong("trusted-proxy"),
        help: "A proxy address or CIDR block whose X-Forwarded-For names the client (repeatable); none by default.")
    var trustedProxies: [String] = []
    @Option(help: "PEM certificate (chain) to serve HTTPS.") var tlsCert: String?
    @Option(help: "PEM private key to serve HTTPS.") var tlsKey: String?
    @Option(
        help: """
            Devices kept in memory for broker logins (about 100 bytes each), so that a login storm after a broker \
            restart reads no store; on PostgreSQL kept exact by LISTEN/NOTIFY. 0 turns the cache off.
            """)
    var loginCacheDevices = 100_000
    @Flag(help: "Do not create the demo product on first start.") var noDemo = false
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"
    @Option(
        help: """
            PostgreSQL URL, postgres://user:password@host:5432/database[?sslmode=...], for several instances \
            sharing one database; default: SQLite in the data directory. DYNREG_DATABASE keeps the password out of ps.
            """)
    var database: String?

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535") }
        guard timestampWindow > 0 else { throw ValidationError("--timestamp-window must be positive") }
        guard (60...86_400).contains(crlRefresh) else { throw ValidationError("--crl-refresh must be 60-86400") }
        if crlUpdatedCommand != nil && crlDir == nil {
            throw ValidationError("--crl-updated-command needs --crl-dir")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
        guard (1...3600).contains(idleTimeout) else { throw ValidationError("--idle-timeout must be 1-3600") }
        guard (1...600).contains(requestTimeout) else { throw ValidationError("--request-timeout must be 1-600") }
        guard (0...3600).contains(shutdownGrace) else { throw ValidationError("--shutdown-grace must be 0-3600") }
        if let maxConnections, maxConnections < 1 { throw ValidationError("--max-connections must be positive") }
        if let maxLoginLifetime, maxLoginLifetime < 1 { throw ValidationError("--max-login-lifetime must be positive") }
        for (flag, value) in [("--address-rate-limit", addressRateLimit), ("--product-rate-limit", productRateLimit)]
        where Self.rate(value) == nil {
            throw ValidationError("\(flag) must be RATE/BURST (for example 20/200), or 0 for no limit")
        }
        guard (1...36_500).contains(eventRetentionDays) else {
            throw ValidationError("--event-retention-days must be 1-36500")
        }
        guard lockoutFailures >= 0 else { throw ValidationError("--lockout-failures must be 0 or more") }
        guard (1...86_400).contains(lockoutWindow), (1...604_800).contains(lockoutDuration) else {
            throw ValidationError("--lockout-window must be 1-86400 and --lockout-duration 1-604800")
        }
        guard (0...10_000_000).contains(loginCacheDevices) else {
            throw ValidationError("--login-cache-devices must be 0-10000000")
        }
        for proxy in trustedProxies where AddressBlock(proxy) == nil {
            throw ValidationError("--trusted-proxy \(proxy) is not an address or CIDR block")
        }
    }

    /// `RATE/BURST`, `RATE` (a burst of ten seconds' worth), or `0` for no limit.
    static func rate(_ text: String) -> RegistrationRate? {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count <= 2, let perSecond = Double(parts[0]), perSecond >= 0 else { return nil }
        guard parts.count == 2 else {
            return RegistrationRate(perSecond: perSecond, burst: max(1, Int(perSecond * 10)))
        }
        guard let burst = Int(parts[1]), burst >= 1 else { return nil }
        return RegistrationRate(perSecond: perSecond, burst: burst)
    }

    func run() async throws {
        var logger = Logger(label: "dynreg")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let dataDirectory = URL(fileURLWithPath: dataDir)
        do {
            try FileManager.default.createDirectory(
                at: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            if let before = try PrivateFiles.restrictDirectory(dataDirectory.path) {
                logger.notice(
                    "made the data directory private (0700)",
                    metadata: ["dynreg.path": "\(dataDir)", "dynreg.mode.before": "\(String(before, radix: 8))"])
            }
        } catch {
            throw CLIError("cannot create the data directory \(dataDir): \(error)")
        }
        let token = try adminToken(dataDirectory: dataDirectory)
        let masterKey = try loadMasterKey(dataDirectory: dataDirectory)
        let broker = try secretToken(
            flag: brokerToken, environment: "DYNREG_BROKER_TOKEN", file: "broker-token", dataDirectory: dataDirectory)
        let metrics = ServerMetrics()
        let databaseURL =
            database ?? ProcessInfo.processInfo.environment["DYNREG_DATABASE"].flatMap { $0.isEmpty ? nil : $0 }
        guard let databaseURL else {
            let store: SQLiteStore
            do {
                store = try SQLiteStore(
                    path: dataDirectory.appendingPathComponent("dynreg.sqlite").path, masterKey: masterKey,
                    metrics: metrics.storeMetrics, loginCacheCapacity: loginCacheDevices)
            } catch {
                throw CLIError("cannot open the database in \(dataDir): \(error)")
            }
            return try await serve(
                store: store, storeFailure: "cannot open the database in \(dataDir)", token: token,
                brokerToken: broker, metrics: metrics, masterKey: masterKey, dataDirectory: dataDirectory,
                logger: logger)
        }
        var configuration: PostgresStore.Configuration
        do {
            configuration = try PostgresStore.Configuration(url: databaseURL)
            configuration.loginCacheCapacity = loginCacheDevices
        } catch {
            throw CLIError("cannot use the PostgreSQL database: \(error)")
        }
        if token.path != nil || ProcessInfo.processInfo.environment["DYNREG_MASTER_KEY"] == nil {
            logger.notice("instances sharing a database need the same DYNREG_ADMIN_TOKEN and DYNREG_MASTER_KEY")
        }
        try await serve(
            store: PostgresStore(
                configuration: configuration, masterKey: masterKey, logger: logger, metrics: metrics.storeMetrics),
            storeFailure: "cannot use the PostgreSQL database", token: token, brokerToken: broker, metrics: metrics,
            masterKey: masterKey, dataDirectory: dataDirectory, logger: logger)
    }

    /// Runs the server and the store in one ServiceGroup; the application migrates the store and checks the master
    /// key before it listens (`storeFailure` prefixes a failure of the former).
    private func serve<Store: RegistrationStore>(
        store: Store, storeFailure: String, token: (value: String, path: String?),
        brokerToken: (value: String, path: String?), metrics: ServerMetrics, masterKey: MasterKey, dataDirectory: URL,
        logger: Logger
    ) async throws {
        var configuration = ServerConfiguration(
            adminToken: token.value, brokerToken: brokerToken.value, masterKey: masterKey)
        configuration.metricsToken = try chosenToken(
            flag: metricsToken, environment: "DYNREG_METRICS_TOKEN", flagName: "metrics-token")
        configuration.host = host
        configuration.port = port
        configuration.timestampWindow = timestampWindow
        if !publicHosts.isEmpty { configuration.publicHosts = publicHosts }
        configuration.crlDirectory = crlDir.map { URL(fileURLWithPath: $0) }
        configuration.crlUpdatedCommand = crlUpdatedCommand
        configuration.crlRefresh = .seconds(crlRefresh)
        configuration.connections.idleTimeout = .seconds(idleTimeout)
        configuration.connections.requestTimeout = .seconds(requestTimeout)
        let descriptors = FileDescriptorLimit.raiseToHardLimit()
        configuration.connections.maxConnections = maxConnections ?? max(16, min(descriptors - 128, 16_384))
        if let maxConnections, maxConnections > descriptors - 64 {
            logger.warning(
                "--max-connections is close to or above the file-descriptor limit: at the limit accepts fail",
                metadata: ["dynreg.descriptors": "\(descriptors)"])
        }
        configuration.shutdownGrace = .seconds(shutdownGrace)
        configuration.limits.perAddress = Self.rate(addressRateLimit)!
        configuration.limits.perProduct = Self.rate(productRateLimit)!
        configuration.limits.lockout.failures = lockoutFailures
        configuration.limits.lockout.window = .seconds(lockoutWindow)
        configuration.limits.lockout.duration = .seconds(lockoutDuration)
        configuration.trustedProxies = trustedProxies.compactMap(AddressBlock.init)
        configuration.eventRetention = .seconds(eventRetentionDays * 86_400)
        configuration.maxLoginLifetime = maxLoginLifetime.map { .seconds($0) }
        if let tlsCert, let tlsKey {
            configuration.tls = .init(certificatePath: tlsCert, keyPath: tlsKey)
        }
        // Created in the application's last step before it listens, printed once it does.
        let demo = DemoProductBox()
        let createDemo = !noDemo
        let scheme = configuration.tls == nil ? "http" : "https"
        let host = self.host
        let tokenNote = [
            token.path.map { "admin token: \($0)" } ?? "admin token: from DYNREG_ADMIN_TOKEN",
            brokerToken.path.map { "broker token: \($0)" }
                ?? "broker token: from --broker-token or DYNREG_BROKER_TOKEN",
        ].joined(separator: "\n")
        let app: any Service
        do {
            app = try buildApplication(
                configuration: configuration, store: store, metrics: metrics,
                services: [NonceSweeper(store: store, logger: logger)], logger: logger,
                onListening: { port in
                    let url = "\(scheme)://\(host):\(port)"
                    var lines = [
                        "dynreg listening on \(url)", "console: \(url)/console/ (sign in with the admin token)",
                        tokenNote,
                    ]
                    if let demo = demo.product.withLock({ $0 }) {
                        lines += [
                            "",
                            "Demo product created (key authentication, auto-create on):",
                            "  ProductId:     \(demo.id)",
                            "  ProductSecret: \(demo.secret)",
                            "Register a device with it:",
                            "  dynreg register --url \(url) --product-id \(demo.id) --device-name demo-device-1 "
                                + "--product-secret \(demo.secret)",
                            "",
                        ]
                    }
                    printNow(lines.joined(separator: "\n"))
                },
                beforeServerStarts: {
                    guard createDemo, try await store.products().isEmpty else { return }
                    let product = try await store.createProduct(DemoProduct.make())
                    demo.product.withLock { $0 = product }
                })
        } catch {
            throw CLIError("cannot start the server: \(error)")
        }
        var groupConfiguration = ServiceGroupConfiguration(
            services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        // A request that never finishes must not hold a deploy: after the grace, the server task is cancelled,
        // which closes every connection.
        groupConfiguration.maximumGracefulShutdownDuration = configuration.shutdownGrace
        groupConfiguration.maximumCancellationDuration = .seconds(5)
        let group = ServiceGroup(configuration: groupConfiguration)
        do {
            try await group.run()
        } catch let error as StartupError {
            switch error.step {
            case .store:
                throw CLIError("\(storeFailure): \(error)")
            case .masterKey:
                throw CLIError(
                    "\(error) (DYNREG_MASTER_KEY or \(dataDir)/master-key): restore the key they were sealed with")
            }
        }
    }

    private func adminToken(dataDirectory: URL) throws -> (value: String, path: String?) {
        try secretToken(flag: nil, environment: "DYNREG_ADMIN_TOKEN", file: "admin-token", dataDirectory: dataDirectory)
    }

    /// A token an operator chose, from the flag or else the environment; `nil` when neither gives one.
    /// It must be at least ``ServerConfiguration/minimumTokenLength`` bytes.
    private func chosenToken(flag: String?, environment: String, flagName: String) throws -> String? {
        if let flag, !flag.isEmpty { return try Self.checked(flag, from: "--\(flagName)") }
        if let value = ProcessInfo.processInfo.environment[environment], !value.isEmpty {
            return try Self.checked(value, from: environment)
        }
        return nil
    }

    private static func checked(_ value: String, from source: String) throws -> String {
        let length = value.utf8.count
        guard length >= ServerConfiguration.minimumTokenLength else {
            throw CLIError(
                "\(source) is \(length) bytes long; a token must have at least "
                    + "\(ServerConfiguration.minimumTokenLength) (for example: openssl rand -hex 32)")
        }
        return value
    }

    /// A token from the flag, else the environment, else `<data-dir>/<file>` (created at random, mode 0600).
    private func secretToken(
        flag: String?, environment: String, file name: String, dataDirectory: URL
    ) throws -> (value: String, path: String?) {
        if let chosen = try chosenToken(flag: flag, environment: environment, flagName: name) { return (chosen, nil) }
        let file = dataDirectory.appendingPathComponent(name)
        if let existing = try? String(contentsOf: file, encoding: .utf8) {
            let value = existing.trimmingCharacters(in: .whitespacesAndNewlines)
            if !value.isEmpty {
                try PrivateFiles.restrictIfExists(file.path)
                return (try Self.checked(value, from: file.path), file.path)
            }
        }
        let value = AdminTokenGenerator.make()
        guard
            FileManager.default.createFile(
                atPath: file.path, contents: Data((value + "\n").utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw CLIError("cannot write \(name) to \(file.path)")
        }
        return (value, file.path)
    }

    private func loadMasterKey(dataDirectory: URL) throws -> MasterKey {
        if let key = try MasterKeySource.existing(dataDirectory: dataDirectory) { return key.key }
        let (key, encoded) = MasterKey.generate()
        try MasterKeySource.write(encoded, to: MasterKeySource.file(in: dataDirectory))
        return key
    }
}

private final class DemoProductBox: Sendable {
    let product = Mutex<Product?>(nil)
}

/// Writes straight to stdout, unbuffered, so a supervising process sees it at once.
func printNow(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
