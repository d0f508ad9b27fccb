import ArgumentParser
import DynRegClient
import DynRegProtocol
import Foundation

struct Register: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Register a device and print the credential the server issues, as a device in the field would.",
        discussion: """
            --url is the server's base URL (https://iot.example.com:8443); /device/register, or /register/dev \
            with --legacy, is appended unless the URL already ends in one of them. The product secret may come \
            from DYNREG_PRODUCT_SECRET so that it does not show in `ps`.
            """
    )

    @Option(help: "The server's base URL, or the full registration URL.") var url: String
    @Option(help: "The product id.") var productId: String
    @Option(help: "The device name.") var deviceName: String
    @Option(help: "The product secret (or DYNREG_PRODUCT_SECRET).") var productSecret: String?
    @Flag(help: "Use the legacy /register/dev protocol (always signed with hmacsha1).") var legacy = false
    @Option(help: "hmacsha256 (default) or hmacsha1.") var algorithm: SignatureAlgorithm?
    @Option(help: ArgumentHelp("Write the credential to this file (JSON, mode 0600).", valueName: "file"))
    var save: String?
    @Flag(help: "Print one JSON object: encryptionType, psk or clientCert and clientKey, requestId.") var json = false
    @Option(
        help: ArgumentHelp(
            "PEM file of the CA that issued the server's certificate, trusted instead of the system's.",
            valueName: "pem"))
    var caFile: String?
    @Flag(help: "Certificate products: make the key here and send a CSR; the key never leaves this machine.")
    var keyOnDevice = false

    func validate() throws {
        if legacy && keyOnDevice { throw ValidationError("--key-on-device needs the current protocol, not --legacy") }
        guard RegistrationEndpoint(string: url) != nil else {
            throw ValidationError("--url must be an http or https URL with a host")
        }
        if legacy, let algorithm, algorithm != .hmacSHA1 {
            throw ValidationError("--legacy requests are always signed with hmacsha1")
        }
    }

    func run() async throws {
        let secret = try secret(productSecret, environment: "DYNREG_PRODUCT_SECRET", option: "--product-secret")
        var configuration = DeviceRegistrar.Configuration(endpoint: RegistrationEndpoint(string: url)!)
        configuration.registrationProtocol = legacy ? .legacy : .current
        configuration.algorithm = algorithm ?? .hmacSHA256
        configuration.certificateKey = keyOnDevice ? .device : .server
        if let caFile {
            do {
                configuration.trustRootsPEM = try String(contentsOfFile: caFile, encoding: .utf8)
            } catch {
                throw CLIError("could not read --ca-file \(caFile)")
            }
        }
        let registered: RegisteredCredential
        do {
            registered = try await DeviceRegistrar(configuration: configuration).register(
                productId: productId, deviceName: deviceName, productSecret: secret)
        } catch let error as RegistrationError {
            throw CLIError(error.description)
        }
        if let save {
            do {
                try await FileCredentialStore(path: save).save(registered)
            } catch {
                throw CLIError("registered (request id \(registered.requestId ?? "")), but \(error)")
            }
        }
        print(json ? jsonOutput(registered) : humanOutput(registered, savedTo: save))
    }

    private func jsonOutput(_ registered: RegisteredCredential) -> String {
        let requestId = registered.requestId ?? ""
        switch registered.credential {
        case .key(let psk):
            return jsonObject(["encryptionType": 2, "psk": psk, "requestId": requestId])
        case .certificate(let clientCert, let clientKey):
            return jsonObject([
                "encryptionType": 1, "clientCert": clientCert, "clientKey": clientKey, "requestId": requestId,
            ])
        }
    }

    private func humanOutput(_ registered: RegisteredCredential, savedTo file: String?) -> String {
        var lines: [String] = []
        switch registered.credential {
        case .key(let psk):
            lines.append("encryptionType: 2 (key)")
            lines.append("psk: \(psk)")
        case .certificate(let clientCert, let clientKey):
            lines.append("encryptionType: 1 (certificate)")
            lines.append("clientCert:")
            lines.append(clientCert.trimmingCharacters(in: .newlines))
            if clientKey.isEmpty {
                lines.append("clientKey: (none: the device kept its own key)")
            } else {
                lines.append("clientKey:")
                lines.append(clientKey.trimmingCharacters(in: .newlines))
            }
        }
        lines.append("requestId: \(registered.requestId ?? "")")
        if let file { lines.append("saved: \(file)") }
        return lines.joined(separator: "\n")
    }
}
