import DynRegTestSupport
import Foundation
import Testing

/// Every valid device name through every `dynreg device` command that takes one, against a real server:
/// names of `A–Z a–z 0–9 _ - . : @` must reach the store unchanged (a MAC address used to answer NotFound).
@Suite("dynreg device commands with every kind of valid device name")
struct DeviceNameCommandTests {
    static let names = [
        "AA:BB:CC:00:11:22", "ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz", "0123456789",
        "_", "-", ".", "..", "...", ":", "@", "-leading-dash", "--two-dashes", ".hidden", "trailing.", "x..y",
        "ops@site.example", "imei:356938035643809", "a_b-c.d:e@f",
        String(repeating: "a_-.:@", count: 8),
    ]

    /// The store's order: SQLite compares names byte by byte.
    static func precedes(_ lhs: String, _ rhs: String) -> Bool {
        Array(lhs.utf8).lexicographicallyPrecedes(Array(rhs.utf8))
    }

    @Test("create, show, activate, reset, certificates, list --after and delete round-trip each name")
    func everyName() async throws {
        #expect(Set(Self.names.joined()) == Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:@"))
        #expect(Self.names.map(\.count).max() == 48)
        try await RunningServer.with { server in
            let environment = ["DYNREG_SERVER": server.baseURL, "DYNREG_ADMIN_TOKEN": RunningServer.adminToken]
            /// Options first, then `--`: a name may start with `-`.
            func dynreg(_ command: [String], _ positionals: [String], json: Bool = true) async throws -> CommandOutput {
                try await runDynreg(
                    ["device"] + command + (json ? ["--json"] : []) + ["--"] + positionals, environment: environment)
            }
            func object(_ result: CommandOutput) throws -> [String: Any] {
                #expect(result.status == 0, "\(result.stderr)")
                return try json(result)
            }
            let product = try json(try await server.dynreg(["product", "create", "--name", "names", "--json"]))
            let id = try #require(product["productId"] as? String)
            for name in Self.names {
                #expect(
                    try object(try await dynreg(["create"], [id, name]))["deviceName"] as? String == name, "\(name)")
            }
            let listed = try object(try await server.dynreg(["device", "list", id, "--limit", "1000", "--json"]))
            let stored = (listed["devices"] as? [[String: Any]])?.compactMap { $0["deviceName"] as? String }
            #expect(stored.map(Set.init) == Set(Self.names))

            for name in Self.names {
                let shown = try await dynreg(["show"], [id, name], json: false)
                #expect(shown.status == 0, "\(name): \(shown.stderr)")
                #expect(shown.stdout.contains("deviceName         \(name)\n"), "\(name): \(shown.stdout)")
                #expect(
                    try object(try await dynreg(["activate"], [id, name]))["status"] as? String == "activated",
                    "\(name)")
                #expect(
                    try object(try await dynreg(["reset"], [id, name]))["status"] as? String == "created", "\(name)")
                let certificates = try object(try await dynreg(["certificates"], [id, name]))
                #expect((certificates["certificates"] as? [Any])?.isEmpty == true, "\(name)")
                let after = try object(
                    try await server.dynreg(["device", "list", id, "--after=\(name)", "--limit", "1000", "--json"]))
                let rest = (after["devices"] as? [[String: Any]])?.compactMap { $0["deviceName"] as? String }
                #expect(rest == Self.names.filter { Self.precedes(name, $0) }.sorted(by: Self.precedes), "\(name)")
            }

            for name in Self.names {
                #expect(try object(try await dynreg(["delete"], [id, name]))["deleted"] as? String == name, "\(name)")
                let gone = try await dynreg(["show"], [id, name])
                #expect(gone.status != 0)
                #expect(gone.stderr == "dynreg: NotFound: device \(name) does not exist\n", "\(name)")
            }
        }
    }
}
