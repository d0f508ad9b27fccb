import DynRegClient
import DynRegProtocol
import DynRegTestSupport
import Foundation
import Testing

/// Runs the built `dynreg`; the product secret comes only from what a test passes.
func dynreg(_ arguments: [String], environment: [String: String?] = [:]) async throws -> CommandOutput {
    try await runDynreg(arguments, environment: ["DYNREG_PRODUCT_SECRET": nil].merging(environment) { $1 })
}

@Suite("dynreg register", .enabled(if: BuiltExecutable.dynreg != nil, "the dynreg executable was not built"))
struct RegisterCommandTests {
    private func arguments(_ baseURL: String, _ extra: [String] = []) -> [String] {
        ["register", "--url", baseURL, "--product-id", Fixture.productId, "--device-name", Fixture.deviceName]
            + extra
    }

    @Test("prints the credential as lines, the secret coming from the environment")
    func humanReadable() async throws {
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            let result = try await dynreg(
                arguments(baseURL), environment: ["DYNREG_PRODUCT_SECRET": Fixture.productSecret])
            #expect(result.status == 0, "\(result.stderr)")
            #expect(result.stdout.contains("encryptionType: 2"))
            #expect(result.stdout.contains("psk: \(Fixture.psk)"))
            #expect(result.stdout.contains("requestId: request-ok"))
            #expect(await log.count == 1)
        }
    }

    @Test("--json prints one object; --save writes the credential file with mode 0600")
    func jsonAndSave() async throws {
        try await withTemporaryDirectory { directory in
            try await withScriptedServer({ _, _ in .legacySuccess() }) { baseURL, log in
                let file = directory.appendingPathComponent("device.json")
                let result = try await dynreg(
                    arguments(
                        baseURL,
                        ["--product-secret", Fixture.productSecret, "--legacy", "--json", "--save", file.path]))
                #expect(result.status == 0, "\(result.stderr)")
                let lines = result.stdout.split(separator: "\n")
                try #require(lines.count == 1)
                let object = try #require(
                    try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any])
                #expect(object["encryptionType"] as? Int == 2)
                #expect(object["psk"] as? String == Fixture.psk)
                #expect(object["requestId"] as? String == "legacy-ok")
                #expect(await log.requests.map(\.path) == ["/register/dev"])
                #expect(try permissions(of: file) == 0o600)
                #expect(try FileCredentialStore(fileURL: file).load()?.credential == .key(psk: Fixture.psk))
            }
        }
    }

    @Test("a refusal is one line on stderr with the platform code and message, and a non-zero exit")
    func refusal() async throws {
        try await withScriptedServer({ _, _ in .failure(.signatureFailure, message: "signature mismatch") }) {
            baseURL, _ in
            let result = try await dynreg(arguments(baseURL, ["--product-secret", Fixture.productSecret]))
            #expect(result.status != 0)
            #expect(result.stdout.isEmpty)
            #expect(result.stderr.split(separator: "\n").count == 1)
            #expect(result.stderr.contains("AuthFailure.SignatureFailure: signature mismatch"))
            #expect(!result.stderr.contains(Fixture.productSecret))
        }
    }

    @Test("a missing product secret is an error before anything is sent")
    func missingSecret() async throws {
        try await withScriptedServer({ _, _ in .success() }) { baseURL, log in
            let result = try await dynreg(arguments(baseURL))
            #expect(result.status != 0)
            #expect(result.stderr.contains("DYNREG_PRODUCT_SECRET"))
            #expect(await log.count == 0)
        }
    }
}
