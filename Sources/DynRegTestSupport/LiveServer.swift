package import DynRegCA
package import DynRegServer
package import DynRegStore
package import Foundation
import Logging
import ServiceLifecycle

/// A real `dynreg` server for tests: in process, on a free loopback port, with a real SQLite file.
package struct LiveServer: Sendable {
    package static let adminToken = "test-admin-token-0123456789abcdef"
    package static let brokerToken = "test-broker-token-0123456789abcdef"
    /// The tests' master key as `DYNREG_MASTER_KEY` takes it, for servers that share a store with `masterKey`.
    package static let encodedMasterKey = String(repeating: "ab", count: 32)
    package static let masterKey = try! MasterKey(encoded: encodedMasterKey)

    package let port: Int
    package let baseURL: String
    package let store: SQLiteStore
    package let directory: URL

    /// Starts a server in `directory` (a fresh temporary one by default), runs `body`, and stops the server.
    package static func with<T: Sendable>(
        directory: URL? = nil,
        masterKey: MasterKey = LiveServer.masterKey,
        configure: (inout ServerConfiguration) -> Void = { _ in },
        _ body: (LiveServer) async throws -> T
    ) async throws -> T {
        let directory =
            directory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-test-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let metrics = ServerMetrics()
        let store = try SQLiteStore(
            path: directory.appendingPathComponent("dynreg.sqlite").path, masterKey: masterKey,
            metrics: metrics.storeMetrics)
        var configuration = ServerConfiguration(adminToken: adminToken, brokerToken: brokerToken, masterKey: masterKey)
        configuration.port = 0
        configure(&configuration)
        var logger = Logger(label: "dynreg-test")
        logger.logLevel = .warning
        let (ports, portContinuation) = AsyncStream.makeStream(of: Int.self)
        let app = try buildApplication(configuration: configuration, store: store, metrics: metrics, logger: logger) {
            port in
            portContinuation.yield(port)
        }
        let group = ServiceGroup(configuration: .init(services: [app], logger: logger))
        let scheme = configuration.tls == nil ? "http" : "https"
        return try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                // A server that fails before it listens (the store's migration, the master key check) ends the wait.
                defer { portContinuation.finish() }
                try await group.run()
            }
            var iterator = ports.makeAsyncIterator()
            guard let port = await iterator.next() else {
                try await tasks.waitForAll()
                throw LiveServerError.didNotStart
            }
            let server = LiveServer(
                port: port, baseURL: "\(scheme)://127.0.0.1:\(port)", store: store, directory: directory)
            do {
                let result = try await body(server)
                await group.triggerGracefulShutdown()
                try await tasks.waitForAll()
                return result
            } catch {
                await group.triggerGracefulShutdown()
                tasks.cancelAll()
                throw error
            }
        }
    }

    /// Creates a product directly in the store; returns it with its secret.
    package func createProduct(
        authType: AuthType = .key, autoCreate: Bool = true, deviceQuota: Int? = nil
    ) async throws -> Product {
        var product = DemoProduct.make()
        product.authType = authType
        product.autoCreate = autoCreate
        product.deviceQuota = deviceQuota
        if authType == .certificate {
            let authority = try ProductCertificateAuthority.create(productId: product.id)
            product.certificateAuthority = StoredCertificateAuthority(
                certificatePEM: authority.certificatePEM,
                sealedPrivateKey: try LiveServer.masterKey.seal(
                    authority.privateKeyPEM, for: .caKey(productId: product.id)),
                keyType: authority.keyType.rawValue, certificateValidityDays: 365)
        }
        return try await store.createProduct(product)
    }
}

package enum LiveServerError: Error {
    case didNotStart
}
