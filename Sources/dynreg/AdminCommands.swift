import ArgumentParser
import AsyncHTTPClient
import DynRegServer
import DynRegStore
import Foundation
import NIOCore
import NIOHTTP1

/// Where the admin API is and how to authenticate: `--server`/`DYNREG_SERVER`, `--token`/`DYNREG_ADMIN_TOKEN`,
/// or the token file in `--data-dir`.
struct AdminOptions: ParsableArguments {
    @Option(help: "The server's base URL (or DYNREG_SERVER; default http://127.0.0.1:8080).") var server: String?
    @Option(help: "The admin token (or DYNREG_ADMIN_TOKEN, or the token file in --data-dir).") var token: String?
    @Option(help: "The server's data directory, to read its admin-token file.") var dataDir = "./dynreg-data"
    @Flag(help: "Print JSON instead of a table.") var json = false

    var baseURL: String {
        let url = server ?? ProcessInfo.processInfo.environment["DYNREG_SERVER"] ?? "http://127.0.0.1:8080"
        return url.hasSuffix("/") ? String(url.dropLast()) : url
    }

    func resolvedToken() throws -> String {
        if let token { return token }
        if let token = ProcessInfo.processInfo.environment["DYNREG_ADMIN_TOKEN"], !token.isEmpty { return token }
        let path = URL(fileURLWithPath: dataDir).appendingPathComponent("admin-token").path
        if let token = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(
            in: .whitespacesAndNewlines),
            !token.isEmpty
        {
            return token
        }
        throw CLIError("no admin token: pass --token, set DYNREG_ADMIN_TOKEN, or point --data-dir at the server's data")
    }

    /// Calls the admin API and decodes the answer as the view the server encoded it from.
    func call<View: Decodable>(
        _ method: HTTPMethod, _ path: String, body: (any Encodable)? = nil, as view: View.Type = View.self
    ) async throws -> View {
        let data = try await send(method, path, body: body)
        do {
            return try Self.decoder.decode(View.self, from: data)
        } catch {
            throw CLIError(
                "the server's answer to \(method.rawValue) \(path) is not what this dynreg expects (\(error))")
        }
    }

    /// Calls the admin API and returns the body as is (PEM documents, empty answers); API errors become one-line
    /// CLI errors.
    @discardableResult
    func send(_ method: HTTPMethod, _ path: String, body: (any Encodable)? = nil) async throws -> Data {
        let token = try resolvedToken()
        var request = HTTPClientRequest(url: baseURL + "/admin/v1" + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONEncoder().encode(body)))
        }
        let client = HTTPClient.shared
        let response: HTTPClientResponse
        let bytes: ByteBuffer
        do {
            response = try await client.execute(request, timeout: .seconds(30))
            bytes = try await response.body.collect(upTo: 16 << 20)
        } catch {
            throw CLIError("cannot reach the dynreg server at \(baseURL): \(error)")
        }
        let data = Data(bytes.readableBytesView)
        guard (200..<300).contains(response.status.code) else {
            if let failure = try? JSONDecoder().decode(AdminErrorBody.self, from: data) {
                throw CLIError("\(failure.error.code): \(failure.error.message)")
            }
            throw CLIError("the server answered HTTP \(response.status.code)")
        }
        return data
    }

    /// Calls the admin API and prints the one record it answers with, as `key  value` lines or JSON.
    func show<View: Codable & FieldListed>(
        _ method: HTTPMethod, _ path: String, body: (any Encodable)? = nil, as view: View.Type
    ) async throws {
        let record = try await call(method, path, body: body, as: View.self)
        try output(record) { fields(record.fieldLines) }
    }

    /// Prints `value` as sorted JSON with `--json`, else the table.
    func output(_ value: some Encodable, table: () -> String) throws {
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
            encoder.dateEncodingStrategy = .iso8601
            print(String(decoding: try encoder.encode(value), as: UTF8.self))
        } else {
            print(table())
        }
    }

    private static let decoder: JSONDecoder = {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        return decoder
    }()
}

/// A file the operator named, as text.
func readFile(_ path: String) throws -> String {
    do {
        return try String(contentsOfFile: path, encoding: .utf8)
    } catch {
        throw CLIError("cannot read \(path)")
    }
}

/// Percent-encodes all but letters, digits, `-`, `_` and `~`, so any device name (`AA:BB:…`, `a@b`, `..`) is
/// one path segment or query value; the server decodes it.
func escaped(_ component: String) -> String {
    component.addingPercentEncoding(withAllowedCharacters: unreservedCharacters) ?? component
}

private let unreservedCharacters = CharacterSet(
    charactersIn: "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_~")

/// Text from the server as a terminal may show it: C0 and C1 control characters and DEL become `\xNN`, so nothing
/// the server relays (the store already escapes what devices send) can clear the screen, set the window title or
/// forge a line. JSON output needs none of this: the encoder escapes control characters.
func terminalSafe(_ text: String) -> String {
    func isControl(_ scalar: Unicode.Scalar) -> Bool {
        scalar.value < 0x20 || (0x7F...0x9F).contains(scalar.value)
    }
    guard text.unicodeScalars.contains(where: isControl) else { return text }
    var safe = String.UnicodeScalarView()
    for scalar in text.unicodeScalars {
        if isControl(scalar) {
            let hex = String(scalar.value, radix: 16)
            safe.append(contentsOf: ("\\x" + (hex.count < 2 ? "0" + hex : hex)).unicodeScalars)
        } else {
            safe.append(scalar)
        }
    }
    return String(safe)
}

/// Aligned columns for people; every cell is made terminal-safe.
func table(_ headers: [String], _ rows: [[String]]) -> String {
    let rows = rows.map { $0.map(terminalSafe) }
    var widths = headers.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count {
            widths[index] = max(widths[index], cell.count)
        }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    return ([line(headers)] + rows.map(line)).joined(separator: "\n")
}

/// `key  value` lines aligned on the longest key of the whole set. A `nil` value leaves its line out: the
/// server did not send the field. A field sent as `null` shows as `-`.
func fields(_ lines: [(key: String, value: String?)]) -> String {
    let width = lines.map(\.key.count).max() ?? 0
    return lines.compactMap { line in
        line.value.map { line.key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + terminalSafe($0) }
    }.joined(separator: "\n")
}

private func onOff(_ value: Bool) -> String { value ? "on" : "off" }
private func dash(_ value: String?) -> String { value ?? "-" }
private func stamp(_ date: Date) -> String { date.ISO8601Format() }

/// A record the CLI prints as `key  value` lines.
protocol FieldListed {
    var fieldLines: [(key: String, value: String?)] { get }
}

extension ProductView: FieldListed {
    var fieldLines: [(key: String, value: String?)] {
        [
            ("productId", productId), ("name", name), ("authType", authType.rawValue), ("productSecret", productSecret),
            ("dynamicRegistration", onOff(dynamicRegistration)), ("autoCreate", onOff(autoCreate)),
            ("deviceQuota", dash(deviceQuota.map(String.init))),
            ("allowClocklessDevices", onOff(allowClocklessDevices)),
            ("caKeyType", caKeyType), ("certificateValidityDays", certificateValidityDays.map(String.init)),
            ("trustedCAs", trustedCaCertificatePems.map { String($0.count) }),
            ("deviceKeyType", deviceKeyType?.rawValue),
            ("defaultTopics", onOff(topicRules.includeDefaults)),
            (
                "topicRules",
                topicRules.rules.isEmpty
                    ? "-"
                    : topicRules.rules.map { "\($0.access.rawValue):\($0.topic)" }
                        .joined(separator: " ")
            ),
            ("registrationRate", registrationRate.map { "\($0.perSecond)/s, burst \($0.burst)" } ?? "server default"),
            ("newDevicesPerHour", newDevicesPerHour.map(String.init) ?? "no brake"),
            ("deviceCount", String(deviceCount)), ("createdAt", stamp(createdAt)),
        ]
    }
}

extension DeviceView: FieldListed {
    var fieldLines: [(key: String, value: String?)] {
        [
            ("productId", productId), ("deviceName", deviceName), ("status", status.rawValue),
            ("createdAt", stamp(createdAt)), ("registeredAt", registeredAt.map(stamp)),
            ("activatedAt", activatedAt.map(stamp)), ("registrationCount", String(registrationCount)),
        ]
    }
}

extension DeviceKeyType: ExpressibleByArgument {}

/// `ACCESS:PATTERN`, e.g. `publish:${productId}/${deviceName}/telemetry`.
struct TopicRuleArgument: ExpressibleByArgument {
    let rule: TopicRule

    init?(argument: String) {
        guard let colon = argument.firstIndex(of: ":"),
            let access = TopicRule.Access(rawValue: String(argument[..<colon]))
        else { return nil }
        rule = TopicRule(String(argument[argument.index(after: colon)...]), access)
    }
}

/// `RATE/BURST` or `RATE` (the burst then ten seconds' worth): registrations a second.
struct RateArgument: ExpressibleByArgument {
    let rate: RegistrationRate

    init?(argument: String) {
        guard let rate = Serve.rate(argument) else { return nil }
        self.rate = rate
    }
}

/// Two bodies sent as one JSON object: a product's settings and its limits.
struct MergedBody<First: Encodable, Second: Encodable>: Encodable {
    var first: First
    var second: Second

    func encode(to encoder: any Encoder) throws {
        try first.encode(to: encoder)
        try second.encode(to: encoder)
    }
}

enum AuthTypeArgument: String, ExpressibleByArgument, CaseIterable {
    case key, certificate
}

struct ProductCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "product", abstract: "Manage products through the admin API.",
        subcommands: [
            Create.self, List.self, Show.self, Update.self, RotateSecret.self, Delete.self, CA.self, CRL.self,
            Lockouts.self,
        ])

    struct Lockouts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List the addresses locked out of a product after repeated wrong signatures, or clear one.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String
        @Option(help: "End this address's lockout now.") var clear: String?

        func run() async throws {
            let path = "/products/\(escaped(productId))/lockouts"
            if let clear {
                _ = try await admin.send(.DELETE, path + "/\(escaped(clear))")
                printNow("\(terminalSafe(clear)) may register again")
                return
            }
            let list = try await admin.call(.GET, path, as: LockoutList.self)
            try admin.output(list) {
                table(
                    ["ADDRESS", "FAILURES", "LOCKED AT", "UNTIL"],
                    list.lockouts.map { lockout in
                        [
                            lockout.remoteAddress, "\(lockout.failures)", stamp(lockout.lockedAt),
                            stamp(lockout.lockedUntil),
                        ]
                    })
            }
        }
    }

    /// A PEM document of a certificate product, printed as the server sends it; the path is the command's name.
    protocol Document: AsyncParsableCommand {
        var admin: AdminOptions { get }
        var productId: String { get }
    }

    struct CA: Document {
        static let configuration = CommandConfiguration(
            commandName: "ca", abstract: "Print a certificate product's CA certificate (PEM), for brokers to trust.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String
    }

    struct CRL: Document {
        static let configuration = CommandConfiguration(
            commandName: "crl", abstract: "Print a certificate product's CRL (PEM, signed by its CA), for brokers.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a product; prints its id and secret.")
        @OptionGroup var admin: AdminOptions
        @Option(help: "The product's name.") var name: String
        @Option(help: "key (psk) or certificate.") var auth: AuthTypeArgument = .key
        @Flag(help: "Only devices created beforehand may register.") var noAutoCreate = false
        @Flag(help: "Refuse every registration.") var noDynamicRegistration = false
        @Option(help: "The most devices the product may hold (default 10000).") var quota: Int?
        @Flag(help: "No device quota at all (a leaked product secret can then create devices without end).")
        var noQuota = false
        @Flag(help: "Admit devices without a clock (X-TC-Timestamp: 0).") var allowClockless = false
        @Option(help: "Certificate products: the CA key, p256 (default), p384, rsa2048, rsa3072 or rsa4096.")
        var caKeyType: String?
        @Option(help: "Certificate products: device certificate validity in days (default 3650).")
        var certificateValidityDays: Int?
        @Option(help: "Certificate products: import this PEM CA certificate instead of creating one.")
        var importCaCert: String?
        @Option(help: "Certificate products: the PEM private key of --import-ca-cert.") var importCaKey: String?
        @Option(
            help:
                "Certificate products: trust this PEM CA certificate (no key) for certificates devices bring; repeatable."
        )
        var trustCaCert: [String] = []
        @Option(help: "Certificate products: p256 (default) or rsa2048 keys for devices that send no CSR.")
        var deviceKeyType: DeviceKeyType?
        @Option(help: "Also allow ACCESS:PATTERN (publish, subscribe or all; ${productId}, ${deviceName}); repeatable.")
        var allowTopic: [TopicRuleArgument] = []
        @Flag(help: "Devices get only the --allow-topic rules, not Tencent's default topics.") var noDefaultTopics =
            false
        @Option(help: "Registrations a second for this product, as RATE/BURST (default: the server's).")
        var rateLimit: RateArgument?
        @Option(help: "The new-device brake: at most N new device names an hour (off by default).")
        var newDevicesPerHour: Int?

        func validate() throws {
            if quota != nil && noQuota { throw ValidationError("--quota and --no-quota contradict each other") }
            if (importCaCert == nil) != (importCaKey == nil) {
                throw ValidationError("--import-ca-cert and --import-ca-key go together")
            }
            if auth == .key
                && (caKeyType != nil || certificateValidityDays != nil || importCaCert != nil || !trustCaCert.isEmpty
                    || deviceKeyType != nil)
            {
                throw ValidationError("CA options need --auth certificate")
            }
        }

        func run() async throws {
            let input = ProductCreateInput(
                name: name, authType: auth == .key ? .key : .certificate, dynamicRegistration: !noDynamicRegistration,
                autoCreate: !noAutoCreate, deviceQuota: noQuota ? .some(nil) : quota.map { .some($0) },
                allowClocklessDevices: allowClockless,
                caKeyType: caKeyType, certificateValidityDays: certificateValidityDays,
                caCertificatePem: try importCaCert.map(readFile), caPrivateKeyPem: try importCaKey.map(readFile),
                trustedCaCertificatePems: trustCaCert.isEmpty ? nil : try trustCaCert.map(readFile),
                topicRules: TopicPolicy(includeDefaults: !noDefaultTopics, rules: allowTopic.map(\.rule)),
                deviceKeyType: deviceKeyType)
            let limits = ProductLimitsInput(
                registrationRate: rateLimit.map { .some($0.rate) },
                newDevicesPerHour: newDevicesPerHour.map { .some($0) })
            try await admin.show(
                .POST, "/products", body: MergedBody(first: input, second: limits), as: ProductView.self)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List products.")
        @OptionGroup var admin: AdminOptions

        func run() async throws {
            let list = try await admin.call(.GET, "/products", as: ProductList.self)
            try admin.output(list) {
                table(
                    ["PRODUCT", "NAME", "AUTH", "DYNREG", "AUTO-CREATE", "QUOTA", "DEVICES"],
                    list.products.map { product in
                        [
                            product.productId, product.name, product.authType.rawValue,
                            onOff(product.dynamicRegistration), onOff(product.autoCreate),
                            dash(product.deviceQuota.map(String.init)), String(product.deviceCount),
                        ]
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a product, with its secret and device count.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            try await admin.show(.GET, "/products/\(escaped(productId))", as: ProductView.self)
        }
    }

    struct Update: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Change a product's switches or quota.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String
        @Option(help: "New name.") var name: String?
        @Option(help: "on or off.") var dynamicRegistration: Switch?
        @Option(help: "on or off.") var autoCreate: Switch?
        @Option(help: "on or off.") var allowClockless: Switch?
        @Option(help: "The most devices the product may hold.") var quota: Int?
        @Flag(help: "Remove the quota.") var noQuota = false
        @Option(help: "Certificate products: also trust this PEM CA certificate for device certificates; repeatable.")
        var trustCaCert: [String] = []
        @Flag(help: "Certificate products: trust no operator CA (before any --trust-ca-cert).") var clearTrustedCas =
            false
        @Option(help: "Certificate products: p256 or rsa2048 keys for devices that send no CSR.")
        var deviceKeyType: DeviceKeyType?
        @Option(help: "Replace the product's topic rules with these ACCESS:PATTERN rules; repeatable.")
        var allowTopic: [TopicRuleArgument] = []
        @Flag(help: "Remove the product's own topic rules.") var clearTopics = false
        @Option(help: "on or off: whether devices also get Tencent's default topics.") var defaultTopics: Switch?
        @Option(help: "Registrations a second for this product, as RATE/BURST.") var rateLimit: RateArgument?
        @Flag(help: "Use the server's registration rate again.") var defaultRateLimit = false
        @Option(help: "The new-device brake: at most N new device names an hour.") var newDevicesPerHour: Int?
        @Flag(help: "Lift the new-device brake.") var noNewDevicesPerHour = false

        enum Switch: String, ExpressibleByArgument { case on, off }

        func validate() throws {
            if quota != nil && noQuota { throw ValidationError("--quota and --no-quota contradict each other") }
            if rateLimit != nil && defaultRateLimit {
                throw ValidationError("--rate-limit and --default-rate-limit contradict each other")
            }
            if newDevicesPerHour != nil && noNewDevicesPerHour {
                throw ValidationError("--new-devices-per-hour and --no-new-devices-per-hour contradict each other")
            }
            if clearTopics && !allowTopic.isEmpty {
                throw ValidationError("--clear-topics and --allow-topic contradict each other")
            }
        }

        func run() async throws {
            // Absent leaves the quota alone; null removes it.
            var deviceQuota: Int?? = quota.map { .some($0) }
            if noQuota { deviceQuota = .some(nil) }
            var trusted: [String]?
            if clearTrustedCas || !trustCaCert.isEmpty {
                // The API replaces the list: add to what the product trusts now.
                var current: [String] = []
                if !clearTrustedCas {
                    current =
                        try await admin.call(.GET, "/products/\(escaped(productId))", as: ProductView.self)
                        .trustedCaCertificatePems ?? []
                }
                trusted = current + (try trustCaCert.map(readFile))
            }
            var topics: TopicPolicy?
            if clearTopics || !allowTopic.isEmpty || defaultTopics != nil {
                // The API replaces the policy: start from the product's.
                var policy =
                    try await admin.call(.GET, "/products/\(escaped(productId))", as: ProductView.self).topicRules
                if clearTopics || !allowTopic.isEmpty { policy.rules = allowTopic.map(\.rule) }
                if let defaultTopics { policy.includeDefaults = defaultTopics == .on }
                topics = policy
            }
            let input = ProductUpdate(
                name: name, dynamicRegistration: dynamicRegistration.map { $0 == .on },
                autoCreate: autoCreate.map { $0 == .on }, deviceQuota: deviceQuota,
                allowClocklessDevices: allowClockless.map { $0 == .on }, trustedDeviceCAs: trusted,
                topicPolicy: topics, deviceKeyType: deviceKeyType)
            var limits = ProductLimitsInput(
                registrationRate: rateLimit.map { .some($0.rate) },
                newDevicesPerHour: newDevicesPerHour.map { .some($0) })
            if defaultRateLimit { limits.registrationRate = .some(nil) }
            if noNewDevicesPerHour { limits.newDevicesPerHour = .some(nil) }
            try await admin.show(
                .PATCH, "/products/\(escaped(productId))", body: MergedBody(first: input, second: limits),
                as: ProductView.self)
        }
    }

    struct RotateSecret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace a product's secret; devices signing with the old one are refused from now on.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            let product = try await admin.call(
                .POST, "/products/\(escaped(productId))/rotate-secret", as: ProductView.self)
            try admin.output(product) {
                fields([("productId", product.productId), ("productSecret", product.productSecret)])
            }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a product and all its devices.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            try await admin.send(.DELETE, "/products/\(escaped(productId))")
            try admin.output(["deleted": productId]) { "deleted product \(productId)" }
        }
    }
}

struct DeviceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device", abstract: "Manage a product's devices through the admin API.",
        subcommands: [
            Create.self, List.self, Show.self, Delete.self, Reset.self, Activate.self, Certificates.self,
            RevokeCertificate.self,
        ])

    struct Certificates: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a certificate device's certificates.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target
        @Option(help: "Certificates per page (1-1000), newest first.") var limit = 100
        @Option(help: "Start after this serial (the previous page's cursor).") var after: String?

        func run() async throws {
            let query = "?limit=\(limit)" + (after.map { "&after=\(escaped($0))" } ?? "")
            let list = try await admin.call(.GET, target.path + "/certificates" + query, as: CertificateList.self)
            try admin.output(list) {
                table(
                    ["SERIAL", "STATUS", "ISSUED", "NOT AFTER", "REVOKED", "FINGERPRINT (SHA-256)"],
                    list.certificates.map { certificate in
                        [
                            certificate.serial, certificate.status, stamp(certificate.issuedAt),
                            stamp(certificate.notAfter), dash(certificate.revokedAt.map(stamp)),
                            certificate.fingerprint,
                        ]
                    }) + (list.nextCursor.map { "\nmore: --after \($0)" } ?? "")
            }
        }
    }

    struct RevokeCertificate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a device certificate; it appears in the product CRL and the broker hook refuses it.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String
        @Argument(help: "The certificate serial (hex).") var serial: String

        func run() async throws {
            let certificate = try await admin.call(
                .POST, "/products/\(escaped(productId))/certificates/\(escaped(serial))/revoke",
                as: CertificateView.self)
            try admin.output(certificate) {
                fields([
                    ("serial", certificate.serial), ("deviceName", certificate.deviceName),
                    ("status", certificate.status), ("revokedAt", certificate.revokedAt.map(stamp)),
                    ("fingerprint", certificate.fingerprint),
                ])
            }
        }
    }

    struct Target: ParsableArguments {
        @Argument(help: "The product id.") var productId: String
        @Argument(help: "The device name.") var deviceName: String

        var path: String { "/products/\(escaped(productId))/devices/\(escaped(deviceName))" }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Pre-register a device (needed when auto-create is off).")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            try await admin.show(
                .POST, "/products/\(escaped(target.productId))/devices",
                body: DeviceCreateInput(deviceName: target.deviceName), as: DeviceView.self)
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List a product's devices, a page at a time.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String
        @Option(help: "created, registered or activated.") var status: String?
        @Option(help: "Devices per page (1-1000).") var limit = 100
        @Option(help: "Start after this device name (the previous page's cursor).") var after: String?

        func run() async throws {
            var query = ["limit=\(limit)"]
            if let status { query.append("status=\(escaped(status))") }
            if let after { query.append("after=\(escaped(after))") }
            let page = try await admin.call(
                .GET, "/products/\(escaped(productId))/devices?" + query.joined(separator: "&"), as: DeviceList.self)
            try admin.output(page) {
                table(
                    ["DEVICE", "STATUS", "REGISTRATIONS", "REGISTERED", "ACTIVATED"],
                    page.devices.map { device in
                        [
                            device.deviceName, device.status.rawValue, String(device.registrationCount),
                            dash(device.registeredAt.map(stamp)), dash(device.activatedAt.map(stamp)),
                        ]
                    }) + (page.nextCursor.map { "\nmore: --after \($0)" } ?? "")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a device and its status.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            try await admin.show(.GET, target.path, as: DeviceView.self)
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a device and its credential.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            try await admin.send(.DELETE, target.path)
            try admin.output(["deleted": target.deviceName]) { "deleted device \(target.deviceName)" }
        }
    }

    /// A `POST` to the device's `reset` or `activate`, named after the command, printing the device it answers.
    protocol DeviceAction: AsyncParsableCommand {
        var admin: AdminOptions { get }
        var target: Target { get }
    }

    struct Reset: DeviceAction {
        static let configuration = CommandConfiguration(
            abstract: "Forget a device's credential and activation so it can register again.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target
    }

    struct Activate: DeviceAction {
        static let configuration = CommandConfiguration(
            abstract: "Mark a device activated; it can no longer re-register.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target
    }
}

extension ProductCommand.Document {
    func run() async throws {
        let document = String(describing: Self.self).lowercased()
        FileHandle.standardOutput.write(try await admin.send(.GET, "/products/\(escaped(productId))/\(document)"))
    }
}

extension DeviceCommand.DeviceAction {
    func run() async throws {
        let action = String(describing: Self.self).lowercased()
        try await admin.show(.POST, target.path + "/" + action, as: DeviceView.self)
    }
}

struct RefusalsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "refusals",
        abstract: "Show registrations refused before any secret was proven, counted per minute, newest first.",
        discussion: """
            Junk, unknown products and wrong signatures are counted, not logged one by one: each line is one \
            minute, endpoint, outcome and address. PRODUCT "-" shows requests that named no known product.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "A product id, or - for requests that named no known product; all when absent.")
    var productId: String?
    @Option(help: "How many lines (1-1000).") var limit = 50

    func run() async throws {
        let filter = productId.map { "&product=\($0 == "-" ? "" : escaped($0))" } ?? ""
        let list = try await admin.call(.GET, "/refusals?limit=\(limit)\(filter)", as: RefusalList.self)
        try admin.output(list) {
            table(
                ["MINUTE", "PRODUCT", "OUTCOME", "COUNT", "REMOTE", "ENDPOINT"],
                list.refusals.map { line in
                    [
                        stamp(line.minute), line.productId.isEmpty ? "-" : line.productId, line.outcome,
                        "\(line.count)", line.remoteAddress, line.endpoint,
                    ]
                })
        }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show a product's registration attempts, newest first.",
        discussion: """
            A table shows the newest --limit events; --all, --since, or --format ndjson or csv, streams every \
            event that matches, a page at a time, to the end.
            """)
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The product id.") var productId: String
    @Option(help: "How many events (1-1000) in a table.") var limit = 50
    @Option(help: "Only events at or after this ISO 8601 time, e.g. 2026-12-01T00:00:00Z.") var since: String?
    @Option(help: "Only events with this outcome, e.g. Success or AuthFailure.SignatureFailure.") var outcome: String?
    @Option(help: "Only events of this device.") var device: String?
    @Option(help: "table, ndjson (one JSON object a line) or csv.") var format: Format = .table
    @Flag(help: "Every matching event, not just the newest page.") var all = false

    enum Format: String, ExpressibleByArgument, CaseIterable { case table, ndjson, csv }

    func run() async throws {
        var filter = ""
        if let since { filter += "&since=\(escaped(since))" }
        if let outcome { filter += "&outcome=\(escaped(outcome))" }
        if let device { filter += "&device=\(escaped(device))" }
        let path = "/products/\(escaped(productId))/events"
        guard format != .table || all || since != nil else {
            let list = try await admin.call(.GET, path + "?limit=\(limit)" + filter, as: EventList.self)
            try admin.output(list) { table(Self.headers, list.events.map(Self.row)) }
            return
        }
        if format == .csv { print(Self.headers.map(Self.csv).joined(separator: ",")) }
        if format == .table { print(table(Self.headers, [])) }
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
        encoder.dateEncodingStrategy = .iso8601
        var cursor: String?
        repeat {
            let before = cursor.map { "&before=\($0)" } ?? ""
            let page = try await admin.call(.GET, path + "?limit=1000" + filter + before, as: EventList.self)
            for event in page.events {
                switch format {
                case .ndjson: print(String(decoding: try encoder.encode(event), as: UTF8.self))
                case .csv: print(Self.row(event).map(Self.csv).joined(separator: ","))
                case .table: print(Self.row(event).map(terminalSafe).joined(separator: "  "))
                }
            }
            cursor = page.nextCursor
        } while cursor != nil
    }

    static let headers = ["TIME", "DEVICE", "OUTCOME", "REMOTE", "ENDPOINT"]

    static func row(_ event: EventView) -> [String] {
        [stamp(event.time), event.deviceName, event.outcome, event.remoteAddress, event.endpoint]
    }

    /// RFC 4180: quoted when it holds a comma, a quote or a line break; a leading = + - @ is quoted too and
    /// prefixed with ', so a spreadsheet does not run it as a formula.
    static func csv(_ field: String) -> String {
        var field = field
        if let first = field.first, "=+-@".contains(first) { field = "'" + field }
        guard field.contains(where: { ",\"\r\n'".contains($0) }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }
}
