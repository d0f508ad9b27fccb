import DynRegProtocol
import DynRegTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

func json(_ result: CommandOutput) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(result.stdout.utf8)) as? [String: Any], "\(result.stdout)")
}

@Suite("dynreg product, device and events commands")
struct AdminCommandTests {
    @Test("product create/show/update/rotate/list/delete, device create/list/show/reset/activate/delete, events")
    func lifecycle() async throws {
        try await RunningServer.with { server in
            let created = try await server.dynreg(["product", "create", "--name", "meters", "--quota", "5", "--json"])
            #expect(created.status == 0, "\(created.stderr)")
            let product = try json(created)
            let id = try #require(product["productId"] as? String)
            let secret = try #require(product["productSecret"] as? String)
            #expect(secret.count >= 16)
            let show = try json(try await server.dynreg(["product", "show", id, "--json"]))
            #expect(show["deviceCount"] as? Int == 0)
            #expect(show["deviceQuota"] as? Int == 5)
            let table = try await server.dynreg(["product", "show", id])
            #expect(table.stdout.contains("autoCreate") && table.stdout.contains("on"))
            let updated = try json(
                try await server.dynreg(["product", "update", id, "--auto-create", "off", "--no-quota", "--json"]))
            #expect(updated["autoCreate"] as? Bool == false)
            #expect(updated["deviceQuota"] is NSNull)
            let rotated = try json(try await server.dynreg(["product", "rotate-secret", id, "--json"]))
            #expect(rotated["productSecret"] as? String != secret)
            let list = try await server.dynreg(["product", "list"])
            #expect(list.stdout.hasPrefix("PRODUCT"))
            #expect(list.stdout.contains(id))

            #expect(try await server.dynreg(["device", "create", id, "gw-01"]).status == 0)
            let device = try json(try await server.dynreg(["device", "show", id, "gw-01", "--json"]))
            #expect(device["status"] as? String == "created")
            let activated = try json(try await server.dynreg(["device", "activate", id, "gw-01", "--json"]))
            #expect(activated["status"] as? String == "activated")
            let reset = try json(try await server.dynreg(["device", "reset", id, "gw-01", "--json"]))
            #expect(reset["status"] as? String == "created")
            for name in ["gw-02", "gw-03"] { _ = try await server.dynreg(["device", "create", id, name]) }
            let page = try json(try await server.dynreg(["device", "list", id, "--limit", "2", "--json"]))
            #expect((page["devices"] as? [Any])?.count == 2)
            #expect(page["nextCursor"] as? String == "gw-02")
            let rest = try json(try await server.dynreg(["device", "list", id, "--after", "gw-02", "--json"]))
            #expect((rest["devices"] as? [[String: Any]])?.map { $0["deviceName"] as? String } == ["gw-03"])
            #expect(try await server.dynreg(["device", "delete", id, "gw-03"]).status == 0)
            let events = try await server.dynreg(["events", id])
            #expect(events.status == 0)
            #expect(events.stdout.hasPrefix("TIME"))
            #expect(try await server.dynreg(["product", "delete", id]).status == 0)
            let gone = try await server.dynreg(["product", "show", id])
            #expect(gone.status != 0)
            #expect(gone.stderr == "dynreg: NotFound: product \(id) does not exist\n")
        }
    }

    @Test("events export every event as ndjson or csv, filtered; limits and lockouts from the command line")
    func eventsExportAndLimits() async throws {
        try await RunningServer.with { server in
            let product = try await server.createProduct()
            for name in ["e1", "e2", "e3"] {
                let registered = try await runDynreg([
                    "register", "--url", server.baseURL, "--product-id", product.id, "--device-name", name,
                    "--product-secret", product.secret,
                ])
                #expect(registered.status == 0, "\(registered.stderr)")
            }
            let ndjson = try await server.dynreg(["events", product.id, "--format", "ndjson", "--outcome", "Success"])
            #expect(ndjson.status == 0, "\(ndjson.stderr)")
            let lines = ndjson.stdout.split(separator: "\n")
            try #require(lines.count == 3, "\(ndjson.stdout)")
            let first = try JSONSerialization.jsonObject(with: Data(lines[0].utf8)) as? [String: Any]
            #expect(first?["deviceName"] as? String == "e3")
            let csv = try await server.dynreg(["events", product.id, "--format", "csv", "--device", "e1"])
            #expect(csv.stdout.split(separator: "\n").first == "TIME,DEVICE,OUTCOME,REMOTE,ENDPOINT")
            #expect(csv.stdout.split(separator: "\n").count == 2, "\(csv.stdout)")
            #expect(csv.stdout.contains(",e1,Success,127.0.0.1,/device/register"), "\(csv.stdout)")
            let badSince = try await server.dynreg(["events", product.id, "--since", "yesterday"])
            #expect(badSince.status != 0 && badSince.stderr.contains("ISO 8601"), "\(badSince.stderr)")

            let limited = try await server.dynreg([
                "product", "update", product.id, "--rate-limit", "5/50", "--new-devices-per-hour", "100",
            ])
            #expect(limited.status == 0, "\(limited.stderr)")
            #expect(limited.stdout.contains("5.0/s, burst 50") && limited.stdout.contains("100"), "\(limited.stdout)")
            let lifted = try await server.dynreg([
                "product", "update", product.id, "--default-rate-limit", "--no-new-devices-per-hour",
            ])
            #expect(lifted.stdout.contains("server default") && lifted.stdout.contains("no brake"), "\(lifted.stdout)")
            let lockouts = try await server.dynreg(["product", "lockouts", product.id])
            #expect(lockouts.status == 0 && lockouts.stdout.hasPrefix("ADDRESS"), "\(lockouts.stdout)")
            let clear = try await server.dynreg(["product", "lockouts", product.id, "--clear", "10.0.0.1"])
            #expect(clear.status != 0 && clear.stderr.contains("NotFound"), "\(clear.stderr)")
        }
    }

    @Test("certificate products: ca, crl, certificates and revoke-certificate")
    func certificates() async throws {
        try await RunningServer.with { server in
            let product = try json(
                try await server.dynreg(["product", "create", "--name", "cams", "--auth", "certificate", "--json"]))
            let id = try #require(product["productId"] as? String)
            let secret = try #require(product["productSecret"] as? String)
            let ca = try await server.dynreg(["product", "ca", id])
            #expect(ca.stdout.hasPrefix("-----BEGIN CERTIFICATE-----"))
            let registered = try await runDynreg([
                "register", "--url", server.baseURL, "--product-id", id, "--device-name", "cam-1", "--product-secret",
                secret,
                "--key-on-device", "--json",
            ])
            #expect(registered.status == 0, "\(registered.stderr)")
            #expect(try json(registered)["clientKey"] as? String != "")
            let certificates = try json(try await server.dynreg(["device", "certificates", id, "cam-1", "--json"]))
            let serial = try #require((certificates["certificates"] as? [[String: Any]])?.first?["serial"] as? String)
            let revoked = try json(try await server.dynreg(["device", "revoke-certificate", id, serial, "--json"]))
            #expect(revoked["status"] as? String == "revoked")
            let crl = try await server.dynreg(["product", "crl", id])
            #expect(crl.stdout.hasPrefix("-----BEGIN X509 CRL-----"))
            let keyProduct = try json(try await server.dynreg(["product", "create", "--name", "k", "--json"]))
            let noCA = try await server.dynreg(["product", "ca", try #require(keyProduct["productId"] as? String)])
            #expect(noCA.status != 0)
            #expect(noCA.stderr.contains("has no CA"))
        }
    }

    @Test("without a token, with a wrong token, and with no server: one line, non-zero")
    func failures() async throws {
        try await RunningServer.with { server in
            let wrong = try await server.dynreg(["product", "list"], token: "nope")
            #expect(wrong.status != 0)
            #expect(wrong.stderr == "dynreg: Unauthorized: wrong admin token\n")
            // No token anywhere: the data directory has none because the server used DYNREG_ADMIN_TOKEN.
            let none = try await runDynreg(
                ["product", "list", "--data-dir", "/nonexistent"],
                environment: ["DYNREG_SERVER": server.baseURL, "DYNREG_ADMIN_TOKEN": ""])
            #expect(none.status != 0)
            #expect(none.stderr.hasPrefix("dynreg: no admin token"))
        }
        let unreachable = try await runDynreg(
            ["product", "list", "--server", "http://127.0.0.1:1", "--token", "t"])
        #expect(unreachable.status != 0)
        #expect(unreachable.stderr.hasPrefix("dynreg: cannot reach the dynreg server at http://127.0.0.1:1"))
        #expect(unreachable.stderr.split(separator: "\n").count == 1)
    }

    @Test("first start prints the demo product; restarting keeps it and creates no second one")
    func demo() async throws {
        let (directory, productId) = try await RunningServer.with(arguments: []) { server in
            #expect(server.banner.contains("Demo product created"))
            let productId = try #require(
                server.banner.split(separator: "\n").first { $0.contains("ProductId:") }?.split(separator: " ").last)
            // Keep the directory for the second start.
            let kept = server.dataDirectory.deletingLastPathComponent()
                .appendingPathComponent("dynreg-demo-\(UUID().uuidString)")
            await server.process.stop()
            #expect(server.process.hasExited)
            try FileManager.default.copyItem(at: server.dataDirectory, to: kept)
            return (kept, String(productId))
        }
        defer { try? FileManager.default.removeItem(at: directory) }
        // Same data directory again.
        try await RunningServer.with(arguments: [], dataDirectory: directory) { again in
            #expect(again.banner.contains("dynreg listening on "))
            #expect(!again.banner.contains("Demo product created"))
            let list = try await again.dynreg(["product", "list", "--json"])
            let products = try json(list)["products"] as? [[String: Any]]
            #expect(products?.map { $0["productId"] as? String } == [productId])
        }
    }

    @Test("text output escapes control characters from the server; product names may not hold any")
    func terminalSafeOutput() async throws {
        try await RunningServer.with { server in
            let refused = try await server.dynreg(["product", "create", "--name", "evil\u{1b}]0;title\u{7}"])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("control characters"), "\(refused.stderr)")
            let product = try await server.createProduct()
            // A refused device name carrying a screen clear, a window title and a forged event line.
            let hostile = "x\u{1b}[2J\u{1b}]0;owned\u{7}\r\n2026-01-01T00:00:00Z  Success  \u{9b}\\x41"
            let signed = SignedRequest(
                registering: RegistrationRequestBody(productId: product.id, deviceName: hostile),
                canonicalHost: "127.0.0.1", algorithm: .hmacSHA256, timestamp: Int64(Date().timeIntervalSince1970),
                nonce: 42)
            var request = URLRequest(url: URL(string: server.baseURL + RegistrationPath.current)!)
            request.httpMethod = "POST"
            for (name, value) in signed.headers(productSecret: product.secret) {
                request.setValue(value, forHTTPHeaderField: name)
            }
            request.httpBody = Data(signed.body)
            _ = try await URLSession.shared.data(for: request)

            // A name that fails validation proved no secret: it is counted, never stored, so nothing of it can
            // reach a terminal from the audit log.
            let events = try await server.dynreg(["events", product.id])
            #expect(events.status == 0, "\(events.stderr)")
            #expect(
                events.stdout.split(separator: "\n").dropFirst().allSatisfy { $0.contains("Admin.") },
                "only the operator's actions: \(events.stdout)")
            let refusals = try await server.dynreg(["refusals", "-"])
            #expect(refusals.status == 0, "\(refusals.stderr)")
            let unsafe = refusals.stdout.unicodeScalars.filter {
                ($0.value < 0x20 && $0 != "\n") || (0x7F...0x9F).contains($0.value)
            }
            #expect(unsafe.isEmpty, "\(unsafe.map(\.value))")
            #expect(refusals.stdout.contains(RegistrationErrorCode.deviceNameInvalid.code), "\(refusals.stdout)")
            #expect(!refusals.stdout.contains("owned"), "\(refusals.stdout)")
            // What the CLI relays raw from the server, such as an error
            // message quoting a path, it escapes: here a product id with a window-title sequence.
            let missing = try await server.dynreg(["product", "show", "NO\u{1b}]0;owned\u{7}"])
            #expect(missing.status != 0)
            #expect(missing.stderr.contains(#"NO\x1b]0;owned\x07"#), "\(missing.stderr)")
            #expect(!missing.stderr.unicodeScalars.contains { $0.value == 0x1B || $0.value == 0x07 })
        }
    }

    @Test("serve refuses an admin or broker token shorter than 32 bytes, and says where it came from")
    func shortTokens() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-short-\(UUID())")
        defer { try? FileManager.default.removeItem(at: directory) }
        let long = String(repeating: "k", count: 32)
        let cases: [([String], [String: String?], String)] = [
            ([], ["DYNREG_ADMIN_TOKEN": "short", "DYNREG_BROKER_TOKEN": long], "DYNREG_ADMIN_TOKEN is 5 bytes"),
            (
                [], ["DYNREG_ADMIN_TOKEN": long, "DYNREG_BROKER_TOKEN": String(long.dropLast())],
                "DYNREG_BROKER_TOKEN is 31"
            ),
            (["--broker-token", "abc"], ["DYNREG_ADMIN_TOKEN": long], "--broker-token is 3 bytes"),
        ]
        for (arguments, environment, message) in cases {
            let refused = try await runDynreg(
                ["serve", "--port", "0", "--no-demo", "--data-dir", directory.path] + arguments,
                environment: environment)
            #expect(refused.status != 0)
            #expect(refused.stderr.contains(message), "\(refused.stderr)")
            #expect(!refused.stdout.contains("listening"))
        }
    }

    @Test("a second server on the same data directory stops at once with a clear message")
    func oneServerPerDataDirectory() async throws {
        try await RunningServer.with { server in
            let second = try await runDynreg(
                ["serve", "--port", "0", "--no-demo", "--data-dir", server.dataDirectory.path],
                environment: ["DYNREG_ADMIN_TOKEN": RunningServer.adminToken])
            #expect(second.status != 0)
            #expect(second.stderr.contains("another dynreg server"), "\(second.stderr)")
            #expect(second.stderr.split(separator: "\n").count == 1)
            // The first one still serves.
            #expect(try await server.dynreg(["product", "list", "--json"]).status == 0)
        }
    }
}
