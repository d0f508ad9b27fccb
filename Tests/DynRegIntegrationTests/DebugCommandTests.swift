import DynRegTestSupport
import DynRegTestVectors
import Foundation
import Testing

@Suite("dynreg debugging tools")
struct DebugCommandTests {
    static var signatureVectors: [Vectors.Signature] { Vectors.signatures }

    @Test("vectors are present")
    func vectorsPresent() {
        #expect(Self.signatureVectors.count == 5)
    }

    @Test("dynreg sign reproduces every v2 signature", arguments: signatureVectors)
    func sign(vector: Vectors.Signature) async throws {
        let result = try await runDynreg([
            "sign", "--product-secret", vector.productSecret, "--host", vector.hostHeader,
            "--timestamp", String(vector.timestamp), "--nonce", String(vector.nonce), "--body", vector.body,
            "--algorithm", vector.algorithmHeader,
        ])
        #expect(result.status == 0)
        #expect(result.stdout.contains(vector.signature))
        if vector.bodyHashAlgorithm == "sha1" || vector.algorithmHeader.lowercased() == "hmacsha256" {
            #expect(result.stdout.contains(vector.stringToSign.replacingOccurrences(of: "\n", with: "\\n")))
        }
        let verified = try await runDynreg([
            "sign", "--product-secret", vector.productSecret, "--host", vector.hostHeader,
            "--timestamp", String(vector.timestamp), "--nonce", String(vector.nonce), "--body", vector.body,
            "--algorithm", vector.algorithmHeader, "--verify", vector.signature,
        ])
        #expect(verified.status == 0)
        #expect(verified.stdout.contains("match"))
        let mismatch = try await runDynreg([
            "sign", "--product-secret", vector.productSecret + "x", "--host", vector.hostHeader,
            "--timestamp", String(vector.timestamp), "--nonce", String(vector.nonce), "--body", vector.body,
            "--algorithm", vector.algorithmHeader, "--verify", vector.signature,
        ])
        #expect(mismatch.status == 1)
        #expect(mismatch.stdout.contains("mismatch"))
    }

    @Test("dynreg sign --legacy reproduces the legacy vector")
    func signLegacy() async throws {
        let result = try await runDynreg(
            [
                "sign", "--legacy", "--product-id", "ASJ1234GX", "--device-name", "xyz", "--timestamp", "1551234565",
                "--nonce", "5456",
            ], environment: ["DYNREG_PRODUCT_SECRET": "hzvf5LF9S0isvBhDSauWMaIk"])
        #expect(result.status == 0)
        #expect(result.stdout.contains("NmQ4Y2Q5MTZkZDE5ZjczYjlkOGFiYzJhYjZmNTM2NTE3MTJiMzhjMg=="))
    }

    @Test("dynreg payload decrypt prints the seed plaintext; encrypt inverts it")
    func payload() async throws {
        let decrypted = try await runDynreg([
            "payload", "decrypt", "--product-secret", "hzvf5LF9S0isvBhDSauWMaIk", "--payload",
            "s6FB3a1BA/YYbcmSE12XpeDVmQNDcf1QgVD141RRbmmAnFwQfp1ECAu5O016mCOvYlJJ6V59yM4OqQSiWphfTg==", "--len", "53",
        ])
        #expect(decrypted.status == 0)
        #expect(decrypted.stdout == "{\"encryptionType\":2,\"psk\":\"lDZ6Uqt+I9E0wW7rvDUs7Q==\"}\n")
        let encrypted = try await runDynreg([
            "payload", "encrypt", "--product-secret", "hzvf5LF9S0isvBhDSauWMaIk", "--plaintext",
            "{\"encryptionType\":2,\"psk\":\"lDZ6Uqt+I9E0wW7rvDUs7Q==\"}",
        ])
        #expect(
            encrypted.stdout
                == "{\"Len\":53,\"Payload\":\"s6FB3a1BA/YYbcmSE12XpeDVmQNDcf1QgVD141RRbmmAnFwQfp1ECAu5O016mCOvYlJJ6V59yM4OqQSiWphfTg==\"}\n"
        )
    }

    @Test("dynreg mqtt-credentials --json matches the vector")
    func mqtt() async throws {
        let result = try await runDynreg([
            "mqtt-credentials", "--product-id", "ASJ1234GX", "--device-name", "xyz", "--psk",
            "lDZ6Uqt+I9E0wW7rvDUs7Q==",
            "--expiry", "1764115200", "--conn-id", "a1B2c", "--algorithm", "hmacsha1", "--json",
        ])
        #expect(result.status == 0)
        let object = try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: String]
        #expect(object?["clientId"] == "ASJ1234GXxyz")
        #expect(object?["username"] == "ASJ1234GXxyz;12010126;a1B2c;1764115200")
        #expect(object?["password"] == "e4b678dc8e740991b94a08739d0f1d68a78001ce;hmacsha1")
    }

    @Test(
        "bad input: one line on stderr, non-zero exit",
        arguments: [
            ["payload", "decrypt", "--product-secret", "short", "--payload", "AAAA"],
            ["payload", "decrypt", "--product-secret", "hzvf5LF9S0isvBhDSauWMaIk", "--payload", "not base64!"],
            ["payload", "decrypt", "--product-secret", "hzvf5LF9S0isvBhDSauWMaIk", "--payload", "AAAA"],
            ["sign", "--product-secret", "hzvf5LF9S0isvBhDSauWMaIk", "--timestamp", "1"],
            [
                "sign", "--product-secret", "hzvf5LF9S0isvBhDSauWMaIk", "--timestamp", "x", "--nonce", "1", "--body",
                "{}",
            ],
            ["mqtt-credentials", "--product-id", "P", "--device-name", "d", "--psk", "!!"],
        ])
    func badInput(arguments: [String]) async throws {
        let result = try await runDynreg(arguments, environment: ["DYNREG_PRODUCT_SECRET": ""])
        #expect(result.status != 0)
        #expect(result.stdout.isEmpty)
        let lines = result.stderr.split(separator: "\n")
        #expect(lines.count == 1)
        #expect(result.stderr.hasPrefix("dynreg: "))
    }
}
