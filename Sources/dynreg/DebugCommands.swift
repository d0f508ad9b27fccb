// Public imports: a public type conforming to a public protocol needs a public witness, even in an executable.
public import ArgumentParser
public import DynRegProtocol
import Foundation

extension SignatureAlgorithm: ExpressibleByArgument {
    public init?(argument: String) { self.init(headerValue: argument) }
}

struct Sign: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show the string to sign and the signature of a registration request, or check one.",
        discussion: """
            Reach for this when a device gets AuthFailure.SignatureFailure (or legacy code 1010): compare the \
            string to sign with what the device computed. The product secret may come from DYNREG_PRODUCT_SECRET.
            """
    )

    @Option(help: "The product secret (or DYNREG_PRODUCT_SECRET).") var productSecret: String?
    @Option(help: "The host the device put in its URL; a port is removed as SDKs do.")
    var host: String = "ap-guangzhou.gateway.tencentdevices.com"
    @Option(help: "\(DeviceRequestHeader.timestamp) (legacy: timestamp), decimal.") var timestamp: String
    @Option(help: "\(DeviceRequestHeader.nonce) (legacy: nonce), decimal.") var nonce: String
    @Option(help: "The raw request body, byte for byte (not for --legacy).") var body: String?
    @Option(help: "hmacsha256 or hmacsha1.") var algorithm: SignatureAlgorithm = .hmacSHA256
    @Flag(help: "Sign the legacy /register/dev fields instead.") var legacy = false
    @Option(help: "With --legacy: the product id.") var productId: String?
    @Option(help: "With --legacy: the device name.") var deviceName: String?
    @Option(help: "Check this signature instead of printing one: exit 0 on match, 1 on mismatch.")
    var verify: String?

    func validate() throws {
        guard DecimalField.parse(timestamp) != nil else { throw ValidationError("--timestamp must be decimal digits") }
        guard DecimalField.parse(nonce) != nil else { throw ValidationError("--nonce must be decimal digits") }
        if legacy {
            guard productId != nil, deviceName != nil else {
                throw ValidationError("--legacy needs --product-id and --device-name")
            }
        } else if body == nil {
            throw ValidationError("missing --body (the raw JSON body the device sent)")
        }
    }

    func run() throws {
        let secret = try secret(productSecret, environment: "DYNREG_PRODUCT_SECRET", option: "--product-secret")
        let stringToSign: String
        let signatures: [String]
        let matches: Bool
        if legacy, let productId, let deviceName {
            let signed = LegacySignedRequest(
                productId: productId, deviceName: deviceName,
                timestamp: DecimalField.parse(timestamp)!, nonce: DecimalField.parse(nonce)!)
            stringToSign = signed.stringToSign
            signatures = [signed.signature(productSecret: secret)]
            matches = verify.map { signed.verify(signature: $0, productSecret: secret) } ?? false
        } else {
            let signed = SignedRequest(
                canonicalHost: CanonicalHost.fromHostHeader(host), algorithm: algorithm,
                timestamp: timestamp, nonce: nonce, body: Array((body ?? "").utf8))
            stringToSign = signed.stringToSign()
            signatures =
                [signed.signature(productSecret: secret)]
                + (algorithm == .hmacSHA1 ? [signed.signature(productSecret: secret, bodyHash: .sha256)] : [])
            matches = verify.map { signed.verify(signature: $0, productSecret: secret) } ?? false
        }
        let escaped = stringToSign.replacingOccurrences(of: "\n", with: "\\n")
        print("string to sign: \(escaped)")
        if verify != nil {
            print(matches ? "match" : "mismatch: the signature does not match this product secret and these fields")
            if !matches { throw ExitCode(1) }
            return
        }
        print("signature:      \(signatures[0])")
        if signatures.count > 1 {
            print("also accepted:  \(signatures[1]) (hmacsha1 over a SHA-256 body hash, as the written spec says)")
        }
    }
}

struct Payload: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Encrypt or decrypt a registration payload (AES-128-CBC keyed by the product secret).",
        subcommands: [Decrypt.self, Encrypt.self]
    )

    struct Decrypt: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print the plaintext of a Payload.")
        @Option(help: "The product secret (or DYNREG_PRODUCT_SECRET).") var productSecret: String?
        @Option(help: "The Base64 Payload.") var payload: String
        @Option(help: "Len from the response; without it trailing NUL bytes are stripped.") var len: Int?

        func run() throws {
            let secret = try secret(productSecret, environment: "DYNREG_PRODUCT_SECRET", option: "--product-secret")
            do {
                let plaintext = try PayloadCipher.decrypt(payload: payload, length: len, productSecret: secret)
                print(String(decoding: plaintext, as: UTF8.self))
            } catch {
                throw CLIError(error.description)
            }
        }
    }

    struct Encrypt: ParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Print {\"Len\":…,\"Payload\":…} for a plaintext.")
        @Option(help: "The product secret (or DYNREG_PRODUCT_SECRET).") var productSecret: String?
        @Option(help: "The plaintext, e.g. {\"encryptionType\":2,\"psk\":\"…\"}.") var plaintext: String

        func run() throws {
            let secret = try secret(productSecret, environment: "DYNREG_PRODUCT_SECRET", option: "--product-secret")
            do {
                let encrypted = try PayloadCipher.encrypt(Array(plaintext.utf8), productSecret: secret)
                print(jsonObject(["Len": encrypted.length, "Payload": encrypted.payload]))
            } catch {
                throw CLIError(error.description)
            }
        }
    }
}

struct MQTTCredentialsCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mqtt-credentials",
        abstract: "Derive the MQTT client id, username and password a device connects with from its psk."
    )

    @Option(help: "The product id.") var productId: String
    @Option(help: "The device name.") var deviceName: String
    @Option(help: "The device's Base64 psk (or DYNREG_PSK).") var psk: String?
    @Option(help: "hmacsha256 or hmacsha1.") var algorithm: SignatureAlgorithm = .hmacSHA256
    @Option(help: "Unix time the password expires (default: one hour from now).") var expiry: Int64?
    @Option(help: "The SDK application id.") var appId: String = MQTTCredentials.defaultAppId
    @Option(help: "The 5-character connection id (default: random).") var connId: String?
    @Flag(help: "Print {\"clientId\",\"username\",\"password\"}.") var json = false

    func validate() throws {
        guard DeviceNameRules.isValid(deviceName) else {
            throw ValidationError("device name must be 1-48 characters of A-Z a-z 0-9 _ - . : @")
        }
    }

    func run() throws {
        let psk = try secret(psk, environment: "DYNREG_PSK", option: "--psk")
        let credentials: MQTTCredentials
        do {
            credentials = try MQTTCredentials.derive(
                productId: productId, deviceName: deviceName, psk: psk, algorithm: algorithm, appId: appId,
                connId: connId ?? MQTTCredentials.randomConnectionId(),
                expiry: expiry ?? Int64(Date().timeIntervalSince1970) + 3600)
        } catch {
            throw CLIError(error.description)
        }
        if json {
            print(
                jsonObject([
                    "clientId": credentials.clientId, "username": credentials.username,
                    "password": credentials.password,
                ]))
        } else {
            print("clientId: \(credentials.clientId)")
            print("username: \(credentials.username)")
            print("password: \(credentials.password)")
        }
    }
}
