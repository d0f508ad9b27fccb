import AsyncHTTPClient
import DynRegProtocol
import DynRegTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Testing

/// `dynreg serve` and `dynreg master-key` as an operator runs them: the master key that seals the store, and the
/// modes of the files the server keeps.
@Suite(.enabled(if: BuiltExecutable.dynreg != nil, "the dynreg executable was not built"))
struct MasterKeyCommandTests {
    private static func withDataDirectory<T>(_ body: (URL) async throws -> T) async throws -> T {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-mk-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: directory) }
        return try await body(directory)
    }

    /// Runs the server with the demo product on `directory` once and returns what it printed.
    private static func demo(
        in directory: URL, environment: [String: String?] = [:],
        _ body: (ServerProcess, DemoDevice) async throws -> Void = { _, _ in }
    ) async throws {
        try await ServerProcess.with(
            arguments: [], environment: environment, dataDirectory: directory,
            ready: { $0.contains("--product-secret") }
        ) { server in try await body(server, try DemoDevice(banner: server.stdout)) }
    }

    @Test("serve refuses a master key that does not open the sealed product secrets, and says which")
    func wrongMasterKeyIsRefused() async throws {
        try await Self.withDataDirectory { directory in
            let first = Self.randomKey()
            try await Self.demo(in: directory, environment: ["DYNREG_MASTER_KEY": first])
            let second = Self.randomKey()
            let refused = try await runDynreg(
                ["serve", "--port", "0", "--data-dir", directory.path], environment: ["DYNREG_MASTER_KEY": second])
            #expect(refused.status != 0)
            #expect(
                refused.stderr.contains(
                    "the master key does not open the stored product secrets: this is not the key they were sealed with"
                ),
                "\(refused.stderr)")
            #expect(refused.stderr.contains("restore the key they were sealed with"), "\(refused.stderr)")
            #expect(!refused.stdout.contains("listening"))
            // The right key still opens it.
            try await ServerProcess.with(environment: ["DYNREG_MASTER_KEY": first], dataDirectory: directory) { _ in }
        }
    }

    @Test(
        "the data directory is 0700 and the database, WAL, shared memory, lock and key files 0600, also after a looser mode"
    )
    func fileModes() async throws {
        try await Self.withDataDirectory { directory in
            try FileManager.default.createDirectory(
                at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o755])
            let files = [
                "dynreg.sqlite", "dynreg.sqlite-wal", "dynreg.sqlite-shm", "dynreg.sqlite.lock", "master-key",
                "admin-token", "broker-token",
            ]
            func expectPrivate(_ when: String) throws {
                #expect(try Self.mode(directory) == 0o700, "the data directory \(when)")
                for file in files {
                    #expect(try Self.mode(directory.appendingPathComponent(file)) == 0o600, "\(file) \(when)")
                }
            }
            try await ServerProcess.with(environment: Self.keyFromFile, dataDirectory: directory) { _ in
                try expectPrivate("on a first start")
            }
            // As an earlier release (or another umask) left them.
            try FileManager.default.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory.path)
            for file in files where FileManager.default.fileExists(atPath: directory.appendingPathComponent(file).path)
            {
                try FileManager.default.setAttributes(
                    [.posixPermissions: 0o644], ofItemAtPath: directory.appendingPathComponent(file).path)
            }
            try await ServerProcess.with(environment: Self.keyFromFile, dataDirectory: directory) { _ in
                try expectPrivate("after a restart")
            }
        }
    }

    @Test("master-key rotate re-seals the store under a new key, which the next server uses")
    func rotate() async throws {
        try await Self.withDataDirectory { directory in
            var registered: (device: DemoDevice, psk: String)?
            try await Self.demo(in: directory, environment: Self.keyFromFile) { _, device in
                registered = (device, try await device.register())
            }
            let (device, psk) = try #require(registered)
            let keyFile = directory.appendingPathComponent("master-key")
            let oldKey = try String(contentsOf: keyFile, encoding: .utf8)
            let rotated = try await runDynreg(
                ["master-key", "rotate", "--data-dir", directory.path], environment: Self.keyFromFile)
            #expect(rotated.status == 0, "\(rotated.stderr)")
            #expect(rotated.stdout.contains("committed: 1 products and 1 device psks"), "\(rotated.stdout)")
            let newKey = try String(contentsOf: keyFile, encoding: .utf8)
            #expect(newKey != oldKey)
            #expect(
                try String(contentsOf: directory.appendingPathComponent("master-key.previous"), encoding: .utf8)
                    == oldKey)
            #expect(try Self.mode(keyFile) == 0o600)
            // The next server opens the product secret (a registration verifies) and the psk (the broker hook).
            try await ServerProcess.with(environment: Self.keyFromFile, dataDirectory: directory) { server in
                #expect(try await device.brokerAllows(psk: psk, server: server))
                _ = try await device.register(name: "demo-device-2", url: server.baseURL)
            }
            // The old key no longer opens the store.
            let refused = try await runDynreg(
                ["serve", "--port", "0", "--data-dir", directory.path], environment: ["DYNREG_MASTER_KEY": oldKey])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("does not open the stored product secrets"), "\(refused.stderr)")
        }
    }

    /// No DYNREG_MASTER_KEY, whatever the tests' environment has: the key is the data directory's file.
    private static let keyFromFile: [String: String?] = ["DYNREG_MASTER_KEY": nil]

    /// A master key as DYNREG_MASTER_KEY takes it: 32 random bytes in Base64.
    private static func randomKey() -> String {
        Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }

    private static func mode(_ url: URL) throws -> Int {
        let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
        return (attributes[.posixPermissions] as? Int ?? -1) & 0o777
    }
}

/// The demo product as `dynreg serve` prints it, and the device its register command names.
struct DemoDevice: Sendable {
    var productId: String
    var secret: String
    var url: String

    init(banner: String) throws {
        let lines = banner.split(separator: "\n").map(String.init)
        func value(_ label: String) throws -> String {
            try #require(lines.first { $0.contains(label) }?.split(separator: " ").last.map(String.init))
        }
        productId = try value("ProductId:")
        secret = try value("ProductSecret:")
        url = try value("dynreg listening on ")
    }

    /// `dynreg register` for `name`; returns the psk it received.
    func register(name: String = "demo-device-1", url: String? = nil) async throws -> String {
        let registered = try await runDynreg(
            [
                "register", "--url", url ?? self.url, "--product-id", productId, "--device-name", name,
                "--product-secret", secret, "--json",
            ], environment: ["DYNREG_PRODUCT_SECRET": nil])
        #expect(registered.status == 0, "\(registered.stderr)")
        let object = try JSONSerialization.jsonObject(with: Data(registered.stdout.utf8)) as? [String: Any]
        return try #require(object?["psk"] as? String)
    }

    /// Whether the server's broker hook allows the MQTT login that `mqtt-credentials` derives from `psk`.
    func brokerAllows(psk: String, server: ServerProcess, name: String = "demo-device-1") async throws -> Bool {
        let mqtt = try await runDynreg([
            "mqtt-credentials", "--product-id", productId, "--device-name", name, "--psk", psk, "--json",
        ])
        #expect(mqtt.status == 0, "\(mqtt.stderr)")
        let credentials = try JSONDecoder().decode(MQTTCredentials.self, from: Data(mqtt.stdout.utf8))
        #expect(MQTTCredentials.verify(username: credentials.username, password: credentials.password, psk: psk))
        var request = HTTPClientRequest(url: server.baseURL + "/device/auth")
        request.method = .POST
        let brokerToken = try String(
            contentsOf: server.dataDirectory.appendingPathComponent("broker-token"), encoding: .utf8)
        request.headers.add(
            name: "Authorization", value: "Bearer \(brokerToken.trimmingCharacters(in: .whitespacesAndNewlines))")
        request.body = .bytes(
            ByteBuffer(
                bytes: try JSONEncoder().encode([
                    "clientid": credentials.clientId, "username": credentials.username,
                    "password": credentials.password,
                ])))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
        let body = try await response.body.collect(upTo: 1 << 16)
        let answer = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
        return answer?["result"] as? String == "allow"
    }
}
