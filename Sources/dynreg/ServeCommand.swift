import ArgumentParser
import DynRegServer
import DynRegStore
import Foundation
import Logging
import ServiceLifecycle

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the registration server (SQLite in the data directory by default).",
        discussion: """
            The admin token is DYNREG_ADMIN_TOKEN, or else a random token written to <data-dir>/admin-token \
            (mode 0600) on first start. On its first start with an empty store the server creates a demo product \
            and prints how to register a device with it.
            """
    )

    @Option(help: "Address to bind.") var host = "127.0.0.1"
    @Option(help: "Port to bind; 0 picks a free one.") var port = 8080
    @Option(help: "Directory for the database and the admin token; created if missing.") var dataDir = "./dynreg-data"
    @Option(help: "Seconds a request timestamp may differ from the server clock.") var timestampWindow: Int64 = 300
    @Option(
        name: .customLong("public-host"),
        help: """
            A host name signatures may name besides the Host header's (repeatable). Replaces the default, \
            ap-guangzhou.gateway.tencentdevices.com, which SDKs that always sign the public gateway need.
            """)
    var publicHosts: [String] = []
    @Option(help: "PEM certificate (chain) to serve HTTPS.") var tlsCert: String?
    @Option(help: "PEM private key to serve HTTPS.") var tlsKey: String?
    @Flag(help: "Do not create the demo product on first start.") var noDemo = false
    @Option(help: "trace, debug, info, notice, warning, error or critical.") var logLevel = "info"

    func validate() throws {
        if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
        guard (0...65535).contains(port) else { throw ValidationError("--port must be 0-65535") }
        guard timestampWindow > 0 else { throw ValidationError("--timestamp-window must be positive") }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown --log-level \(logLevel)") }
    }

    func run() async throws {
        var logger = Logger(label: "dynreg")
        logger.logLevel = Logger.Level(rawValue: logLevel) ?? .info
        let dataDirectory = URL(fileURLWithPath: dataDir)
        do {
            try FileManager.default.createDirectory(
                at: dataDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw CLIError("cannot create the data directory \(dataDir): \(error.localizedDescription)")
        }
        let token = try adminToken(dataDirectory: dataDirectory)
        let store: SQLiteStore
        do {
            store = try SQLiteStore(path: dataDirectory.appendingPathComponent("dynreg.sqlite").path)
        } catch {
            throw CLIError("cannot open the database in \(dataDir): \(error)")
        }
        var configuration = ServerConfiguration(adminToken: token.value)
        configuration.host = host
        configuration.port = port
        configuration.timestampWindow = timestampWindow
        if !publicHosts.isEmpty { configuration.publicHosts = publicHosts }
        if let tlsCert, let tlsKey {
            configuration.tls = .init(certificatePath: tlsCert, keyPath: tlsKey)
        }
        let demo = noDemo ? nil : try await createDemoProductIfEmpty(store)
        let scheme = configuration.tls == nil ? "http" : "https"
        let host = self.host
        let tokenNote = token.path.map { "admin token: \($0)" } ?? "admin token: from DYNREG_ADMIN_TOKEN"
        let app: any Service
        do {
            app = try buildApplication(
                configuration: configuration, store: store,
                services: [NonceSweeper(store: store, logger: logger)], logger: logger
            ) { port in
                let url = "\(scheme)://\(host):\(port)"
                var lines = ["dynreg listening on \(url)", tokenNote]
                if let demo {
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
            }
        } catch {
            throw CLIError("cannot start the server: \(error)")
        }
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
    }

    private func adminToken(dataDirectory: URL) throws -> (value: String, path: String?) {
        if let value = ProcessInfo.processInfo.environment["DYNREG_ADMIN_TOKEN"], !value.isEmpty {
            return (value, nil)
        }
        let file = dataDirectory.appendingPathComponent("admin-token")
        if let existing = try? String(contentsOf: file, encoding: .utf8) {
            let value = existing.trimmingCharacters(in: .whitespacesAndNewlines)
            if !value.isEmpty { return (value, file.path) }
        }
        let value = AdminTokenGenerator.make()
        guard
            FileManager.default.createFile(
                atPath: file.path, contents: Data((value + "\n").utf8), attributes: [.posixPermissions: 0o600])
        else {
            throw CLIError("cannot write the admin token to \(file.path)")
        }
        return (value, file.path)
    }

    private func createDemoProductIfEmpty(_ store: SQLiteStore) async throws -> Product? {
        guard try await store.products().isEmpty else { return nil }
        return try await store.createProduct(DemoProduct.make())
    }
}

/// Writes straight to stdout, unbuffered, so a supervising process sees it at once.
func printNow(_ text: String) {
    FileHandle.standardOutput.write(Data((text + "\n").utf8))
}
