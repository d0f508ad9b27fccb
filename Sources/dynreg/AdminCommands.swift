import ArgumentParser
import AsyncHTTPClient
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
        if let token = try? String(contentsOfFile: path, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines),
            !token.isEmpty
        {
            return token
        }
        throw CLIError("no admin token: pass --token, set DYNREG_ADMIN_TOKEN, or point --data-dir at the server's data")
    }

    /// Calls the admin API and returns the decoded JSON; API errors become one-line CLI errors.
    func call(_ method: HTTPMethod, _ path: String, body: [String: Any?]? = nil) async throws -> Any? {
        let data = try await raw(method, path, body: body)
        return data.isEmpty ? nil : try? JSONSerialization.jsonObject(with: data)
    }

    /// Calls the admin API and returns the body as is (PEM documents).
    func raw(_ method: HTTPMethod, _ path: String, body: [String: Any?]? = nil) async throws -> Data {
        let token = try resolvedToken()
        var request = HTTPClientRequest(url: baseURL + "/admin/v1" + path)
        request.method = method
        request.headers.add(name: "Authorization", value: "Bearer \(token)")
        if let body {
            let object = body.mapValues { $0 ?? NSNull() }
            request.headers.add(name: "Content-Type", value: "application/json")
            request.body = .bytes(ByteBuffer(bytes: try JSONSerialization.data(withJSONObject: object)))
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
            let object = try? JSONSerialization.jsonObject(with: data)
            if let error = (object as? [String: Any])?["error"] as? [String: Any] {
                throw CLIError("\(error["code"] as? String ?? "Error"): \(error["message"] as? String ?? "")")
            }
            throw CLIError("the server answered HTTP \(response.status.code)")
        }
        return data
    }

    func output(_ object: Any?, table: () -> String) {
        if json {
            let data = (try? JSONSerialization.data(
                withJSONObject: object ?? [String: Any](), options: [.sortedKeys, .withoutEscapingSlashes])) ?? Data()
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(table())
        }
    }
}

/// Aligned columns for people.
func table(_ headers: [String], _ rows: [[String]]) -> String {
    var widths = headers.map(\.count)
    for row in rows {
        for (index, cell) in row.enumerated() where index < widths.count { widths[index] = max(widths[index], cell.count) }
    }
    func line(_ cells: [String]) -> String {
        cells.enumerated().map { index, cell in
            index == cells.count - 1 ? cell : cell.padding(toLength: widths[index], withPad: " ", startingAt: 0)
        }.joined(separator: "  ")
    }
    return ([line(headers)] + rows.map(line)).joined(separator: "\n")
}

/// The switches shown as on/off; other numbers print as numbers (NSNumber bridges 1 to `true` on Linux).
private let switchKeys: Set<String> = ["dynamicRegistration", "autoCreate", "allowClocklessDevices"]

func text(_ value: Any?, key: String = "") -> String {
    if switchKeys.contains(key), let bool = value as? Bool { return bool ? "on" : "off" }
    switch value {
    case nil, is NSNull: return "-"
    case let string as String: return string
    case let number as NSNumber: return number.stringValue
    default: return "\(value!)"
    }
}

func fields(_ object: [String: Any], _ keys: [String]) -> String {
    let width = keys.map(\.count).max() ?? 0
    return keys.filter { object[$0] != nil }.map { key in
        key.padding(toLength: width, withPad: " ", startingAt: 0) + "  " + text(object[key], key: key)
    }.joined(separator: "\n")
}

enum AuthTypeArgument: String, ExpressibleByArgument, CaseIterable {
    case key, certificate
}

struct ProductCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "product", abstract: "Manage products through the admin API.",
        subcommands: [
            Create.self, List.self, Show.self, Update.self, RotateSecret.self, Delete.self, CA.self, CRL.self,
        ])

    static let productKeys = [
        "productId", "name", "authType", "productSecret", "dynamicRegistration", "autoCreate", "deviceQuota",
        "allowClocklessDevices", "caKeyType", "certificateValidityDays", "deviceCount", "createdAt",
    ]

    struct CA: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "ca", abstract: "Print a certificate product's CA certificate (PEM), for brokers to trust.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            FileHandle.standardOutput.write(try await admin.raw(.GET, "/products/\(productId)/ca"))
        }
    }

    struct CRL: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "crl", abstract: "Print a certificate product's CRL (PEM, signed by its CA), for brokers.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            FileHandle.standardOutput.write(try await admin.raw(.GET, "/products/\(productId)/crl"))
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Create a product; prints its id and secret.")
        @OptionGroup var admin: AdminOptions
        @Option(help: "The product's name.") var name: String
        @Option(help: "key (psk) or certificate.") var auth: AuthTypeArgument = .key
        @Flag(help: "Only devices created beforehand may register.") var noAutoCreate = false
        @Flag(help: "Refuse every registration.") var noDynamicRegistration = false
        @Option(help: "The most devices the product may hold.") var quota: Int?
        @Flag(help: "Admit devices without a clock (X-TC-Timestamp: 0).") var allowClockless = false
        @Option(help: "Certificate products: the CA key, p256 (default), p384 or rsa2048.") var caKeyType: String?
        @Option(help: "Certificate products: device certificate validity in days (default 3650).")
        var certificateValidityDays: Int?
        @Option(help: "Certificate products: import this PEM CA certificate instead of creating one.")
        var importCaCert: String?
        @Option(help: "Certificate products: the PEM private key of --import-ca-cert.") var importCaKey: String?

        func validate() throws {
            if (importCaCert == nil) != (importCaKey == nil) {
                throw ValidationError("--import-ca-cert and --import-ca-key go together")
            }
            if auth == .key && (caKeyType != nil || certificateValidityDays != nil || importCaCert != nil) {
                throw ValidationError("CA options need --auth certificate")
            }
        }

        func run() async throws {
            func read(_ path: String?) throws -> String? {
                guard let path else { return nil }
                do {
                    return try String(contentsOfFile: path, encoding: .utf8)
                } catch {
                    throw CLIError("cannot read \(path)")
                }
            }
            let object = try await admin.call(.POST, "/products", body: [
                "name": name, "authType": auth.rawValue, "autoCreate": !noAutoCreate,
                "dynamicRegistration": !noDynamicRegistration, "deviceQuota": quota,
                "allowClocklessDevices": allowClockless, "caKeyType": caKeyType,
                "certificateValidityDays": certificateValidityDays, "caCertificatePem": try read(importCaCert),
                "caPrivateKeyPem": try read(importCaKey),
            ].filter { $0.value != nil })
            admin.output(object) { fields(object as? [String: Any] ?? [:], ProductCommand.productKeys) }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "List products.")
        @OptionGroup var admin: AdminOptions

        func run() async throws {
            let object = try await admin.call(.GET, "/products")
            let products = (object as? [String: Any])?["products"] as? [[String: Any]] ?? []
            admin.output(object) {
                table(
                    ["PRODUCT", "NAME", "AUTH", "DYNREG", "AUTO-CREATE", "QUOTA", "DEVICES"],
                    products.map { product in
                        ["productId", "name", "authType", "dynamicRegistration", "autoCreate", "deviceQuota", "deviceCount"]
                            .map { text(product[$0], key: $0) }
                    })
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a product, with its secret and device count.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            let object = try await admin.call(.GET, "/products/\(productId)")
            admin.output(object) { fields(object as? [String: Any] ?? [:], ProductCommand.productKeys) }
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

        enum Switch: String, ExpressibleByArgument { case on, off }

        func validate() throws {
            if quota != nil && noQuota { throw ValidationError("--quota and --no-quota contradict each other") }
        }

        func run() async throws {
            var body: [String: Any?] = [:]
            if let name { body["name"] = name }
            if let dynamicRegistration { body["dynamicRegistration"] = dynamicRegistration == .on }
            if let autoCreate { body["autoCreate"] = autoCreate == .on }
            if let allowClockless { body["allowClocklessDevices"] = allowClockless == .on }
            if let quota { body["deviceQuota"] = quota }
            if noQuota { body["deviceQuota"] = .some(nil) }
            let object = try await admin.call(.PATCH, "/products/\(productId)", body: body)
            admin.output(object) { fields(object as? [String: Any] ?? [:], ProductCommand.productKeys) }
        }
    }

    struct RotateSecret: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Replace a product's secret; devices signing with the old one are refused from now on.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            let object = try await admin.call(.POST, "/products/\(productId)/rotate-secret")
            admin.output(object) { fields(object as? [String: Any] ?? [:], ["productId", "productSecret"]) }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a product and all its devices.")
        @OptionGroup var admin: AdminOptions
        @Argument(help: "The product id.") var productId: String

        func run() async throws {
            _ = try await admin.call(.DELETE, "/products/\(productId)")
            admin.output(["deleted": productId]) { "deleted product \(productId)" }
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

        func run() async throws {
            let object = try await admin.call(.GET, target.path + "/certificates")
            let certificates = (object as? [String: Any])?["certificates"] as? [[String: Any]] ?? []
            admin.output(object) {
                table(
                    ["SERIAL", "STATUS", "ISSUED", "NOT AFTER", "REVOKED", "FINGERPRINT (SHA-256)"],
                    certificates.map { certificate in
                        ["serial", "status", "issuedAt", "notAfter", "revokedAt", "fingerprint"].map { text(certificate[$0]) }
                    })
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
            let object = try await admin.call(.POST, "/products/\(productId)/certificates/\(serial)/revoke")
            admin.output(object) {
                fields(object as? [String: Any] ?? [:], ["serial", "deviceName", "status", "revokedAt", "fingerprint"])
            }
        }
    }

    static let deviceKeys = [
        "productId", "deviceName", "status", "createdAt", "registeredAt", "activatedAt", "registrationCount",
    ]

    struct Target: ParsableArguments {
        @Argument(help: "The product id.") var productId: String
        @Argument(help: "The device name.") var deviceName: String

        var path: String {
            let name = deviceName.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed) ?? deviceName
            return "/products/\(productId)/devices/\(name)"
        }
    }

    struct Create: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Pre-register a device (needed when auto-create is off).")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            let object = try await admin.call(
                .POST, "/products/\(target.productId)/devices", body: ["deviceName": target.deviceName])
            admin.output(object) { fields(object as? [String: Any] ?? [:], DeviceCommand.deviceKeys) }
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
            if let status { query.append("status=\(status)") }
            if let after { query.append("after=\(after.addingPercentEncoding(withAllowedCharacters: .urlQueryAllowed) ?? after)") }
            let object = try await admin.call(.GET, "/products/\(productId)/devices?" + query.joined(separator: "&"))
            let devices = (object as? [String: Any])?["devices"] as? [[String: Any]] ?? []
            let cursor = (object as? [String: Any])?["nextCursor"] as? String
            admin.output(object) {
                table(
                    ["DEVICE", "STATUS", "REGISTRATIONS", "REGISTERED", "ACTIVATED"],
                    devices.map { device in
                        ["deviceName", "status", "registrationCount", "registeredAt", "activatedAt"].map { text(device[$0]) }
                    }) + (cursor.map { "\nmore: --after \($0)" } ?? "")
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Show a device and its status.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            let object = try await admin.call(.GET, target.path)
            admin.output(object) { fields(object as? [String: Any] ?? [:], DeviceCommand.deviceKeys) }
        }
    }

    struct Delete: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete a device and its credential.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            _ = try await admin.call(.DELETE, target.path)
            admin.output(["deleted": target.deviceName]) { "deleted device \(target.deviceName)" }
        }
    }

    struct Reset: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Forget a device's credential and activation so it can register again.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            let object = try await admin.call(.POST, target.path + "/reset")
            admin.output(object) { fields(object as? [String: Any] ?? [:], DeviceCommand.deviceKeys) }
        }
    }

    struct Activate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Mark a device activated; it can no longer re-register.")
        @OptionGroup var admin: AdminOptions
        @OptionGroup var target: Target

        func run() async throws {
            let object = try await admin.call(.POST, target.path + "/activate")
            admin.output(object) { fields(object as? [String: Any] ?? [:], DeviceCommand.deviceKeys) }
        }
    }
}

struct EventsCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events", abstract: "Show a product's registration attempts, newest first.")
    @OptionGroup var admin: AdminOptions
    @Argument(help: "The product id.") var productId: String
    @Option(help: "How many events (1-1000).") var limit = 50

    func run() async throws {
        let object = try await admin.call(.GET, "/products/\(productId)/events?limit=\(limit)")
        let events = (object as? [String: Any])?["events"] as? [[String: Any]] ?? []
        admin.output(object) {
            table(
                ["TIME", "DEVICE", "OUTCOME", "REMOTE", "ENDPOINT"],
                events.map { event in
                    ["time", "deviceName", "outcome", "remoteAddress", "endpoint"].map { text(event[$0]) }
                })
        }
    }
}
