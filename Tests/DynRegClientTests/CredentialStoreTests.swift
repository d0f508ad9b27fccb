import DynRegClient
import DynRegProtocol
import Foundation
import Testing

/// A fresh directory under the system's temporary directory, removed afterwards.
func withTemporaryDirectory(_ body: (URL) async throws -> Void) async throws {
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("dynreg-client-tests-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    try await body(directory)
}

func permissions(of url: URL) throws -> Int {
    let attributes = try FileManager.default.attributesOfItem(atPath: url.path)
    return (attributes[.posixPermissions] as? NSNumber)?.intValue ?? -1
}

@Suite("Credential store")
struct CredentialStoreTests {
    static let keyCredential = RegisteredCredential(
        productId: Fixture.productId, deviceName: Fixture.deviceName, credential: .key(psk: Fixture.psk),
        requestId: "request-ok")

    @Test(
        "the file store writes mode 0600 and reads back what it wrote",
        arguments: [
            keyCredential,
            RegisteredCredential(
                productId: Fixture.productId, deviceName: "aa:bb:cc:dd:ee:ff",
                credential: .certificate(
                    clientCert: "-----BEGIN CERTIFICATE-----\nMIIB/zCC\n-----END CERTIFICATE-----\n",
                    clientKey: "-----BEGIN PRIVATE KEY-----\nMIGH/AgE\n-----END PRIVATE KEY-----\n")),
        ])
    func roundTrip(credential: RegisteredCredential) async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("credential.json")
            let store = FileCredentialStore(fileURL: file)
            #expect(try store.load() == nil)
            try await store.save(credential)

            #expect(try permissions(of: file) == 0o600)
            #expect(try store.load() == credential)
            #expect(
                try await store.credential(productId: credential.productId, deviceName: credential.deviceName)
                    == credential)
            // Only the credential file is left: the temporary file was renamed, not copied.
            #expect(try FileManager.default.contentsOfDirectory(atPath: directory.path) == ["credential.json"])

            let json = try #require(
                try JSONSerialization.jsonObject(with: Data(contentsOf: file)) as? [String: Any])
            #expect(json["productId"] as? String == credential.productId)
            #expect(json["deviceName"] as? String == credential.deviceName)
            #expect(json["encryptionType"] as? Int == credential.credential.encryptionType)
            switch credential.credential {
            case .key(let psk):
                #expect(json["psk"] as? String == psk)
                #expect(json["clientCert"] == nil)
            case .certificate(let clientCert, let clientKey):
                #expect(json["clientCert"] as? String == clientCert)
                #expect(json["clientKey"] as? String == clientKey)
                #expect(json["psk"] == nil)
            }
        }
    }

    @Test("saving over a world-readable file leaves a 0600 file")
    func replacesWiderFile() async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("credential.json")
            _ = FileManager.default.createFile(
                atPath: file.path, contents: Data("old".utf8), attributes: [.posixPermissions: 0o644])
            try await FileCredentialStore(fileURL: file).save(Self.keyCredential)
            #expect(try permissions(of: file) == 0o600)
            #expect(try FileCredentialStore(fileURL: file).load() == Self.keyCredential)
        }
    }

    @Test("a file holding another device's credential is an error, not a miss")
    func anotherDevice() async throws {
        try await withTemporaryDirectory { directory in
            let store = FileCredentialStore(fileURL: directory.appendingPathComponent("credential.json"))
            try await store.save(Self.keyCredential)
            let error = try await #require(throws: RegistrationError.self) {
                try await store.credential(productId: Fixture.productId, deviceName: "another-device")
            }
            #expect(error.code == .credentialStore)
            #expect(!error.description.contains(Fixture.psk))
        }
    }

    @Test("a file that is not a credential is an error that does not quote the file")
    func notACredential() async throws {
        try await withTemporaryDirectory { directory in
            let file = directory.appendingPathComponent("credential.json")
            try Data(#"{"psk":"c2VjcmV0LXNlY3JldC1zZWNyZXQ="}"#.utf8).write(to: file)
            let error = try #require(throws: RegistrationError.self) { try FileCredentialStore(fileURL: file).load() }
            #expect(error.code == .credentialStore)
            #expect(!error.description.contains("c2VjcmV0"))
        }
    }

    @Test("saving into a missing directory is a credential store error")
    func missingDirectory() async throws {
        try await withTemporaryDirectory { directory in
            let store = FileCredentialStore(fileURL: directory.appendingPathComponent("absent/credential.json"))
            let error = try await #require(throws: RegistrationError.self) { try await store.save(Self.keyCredential) }
            #expect(error.code == .credentialStore)
        }
    }

    @Test("registerIfNeeded registers once, then answers from the store without a request")
    func registerIfNeededOnce() async throws {
        try await withTemporaryDirectory { directory in
            try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
                let registrar = DeviceRegistrar(configuration: fastConfiguration(baseURL))
                let store = FileCredentialStore(fileURL: directory.appendingPathComponent("credential.json"))
                let first = try await registrar.registerIfNeeded(
                    productId: Fixture.productId, deviceName: Fixture.deviceName,
                    productSecret: Fixture.productSecret, store: store)
                let second = try await registrar.registerIfNeeded(
                    productId: Fixture.productId, deviceName: Fixture.deviceName,
                    productSecret: Fixture.productSecret, store: store)
                #expect(first == second)
                #expect(first.credential == .key(psk: Fixture.psk))
                #expect(await log.count == 1)
                #expect(try store.load() == first)
            }
        }
    }

    @Test("registerIfNeeded does not register over another device's stored credential")
    func registerIfNeededOtherDevice() async throws {
        try await withTemporaryDirectory { directory in
            try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
                let store = FileCredentialStore(fileURL: directory.appendingPathComponent("credential.json"))
                try await store.save(Self.keyCredential)
                let error = try await #require(throws: RegistrationError.self) {
                    try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerIfNeeded(
                        productId: Fixture.productId, deviceName: "another-device",
                        productSecret: Fixture.productSecret, store: store)
                }
                #expect(error.code == .credentialStore)
                #expect(await log.count == 0)
            }
        }
    }

    @Test("registerIfNeeded reports a store that cannot save as a credential store error")
    func registerIfNeededSaveFails() async throws {
        struct ReadOnlyStore: CredentialStore {
            struct Refused: Error {}
            func credential(productId: String, deviceName: String) async throws -> RegisteredCredential? { nil }
            func save(_ credential: RegisteredCredential) async throws { throw Refused() }
        }
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            let error = try await #require(throws: RegistrationError.self) {
                try await DeviceRegistrar(configuration: fastConfiguration(baseURL)).registerIfNeeded(
                    productId: Fixture.productId, deviceName: Fixture.deviceName,
                    productSecret: Fixture.productSecret, store: ReadOnlyStore())
            }
            #expect(error.code == .credentialStore)
            #expect(error.underlying is ReadOnlyStore.Refused)
            #expect(await log.count == 1)
        }
    }
}

@Suite("Registered credential")
struct RegisteredCredentialTests {
    @Test("MQTT parameters are derived from the psk as PROTOCOL.md §4 says")
    func mqttParameters() throws {
        let registered = CredentialStoreTests.keyCredential
        let expiry = Date(timeIntervalSince1970: 1_900_000_000)
        let mqtt = try #require(try registered.mqttCredentials(expiry: expiry, connId: "abcde"))
        let expected = try MQTTCredentials.derive(
            productId: Fixture.productId, deviceName: Fixture.deviceName, psk: Fixture.psk, connId: "abcde",
            expiry: 1_900_000_000)
        #expect(mqtt == expected)
        #expect(mqtt.clientId == Fixture.productId + Fixture.deviceName)
        #expect(MQTTCredentials.verify(username: mqtt.username, password: mqtt.password, psk: Fixture.psk))
    }

    @Test("description and dump hide the psk")
    func redacted() {
        let registered = CredentialStoreTests.keyCredential
        var dumped = ""
        dump(registered, to: &dumped)
        #expect(!String(describing: registered).contains(Fixture.psk))
        #expect(!String(reflecting: registered).contains(Fixture.psk))
        #expect(!dumped.contains(Fixture.psk))
    }
}
