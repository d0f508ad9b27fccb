import DynRegProtocol
import DynRegTestSupport
import Foundation
import Testing

@Suite(
    "dynreg register against dynreg serve",
    .enabled(if: BuiltExecutable.dynreg != nil, "the dynreg executable was not built"))
struct ServeAndRegisterTests {
    @Test("the demo product's psk from dynreg register is accepted by mqtt-credentials and the broker hook")
    func demoFlow() async throws {
        try await ServerProcess.with(arguments: [], ready: { $0.contains("--product-secret") }) { server in
            let lines = server.stdout.split(separator: "\n").map(String.init)
            // The register command exactly as the banner prints it.
            let command = try #require(lines.first { $0.contains("dynreg register") })
            var words = command.split(separator: " ").map(String.init)
            words.removeFirst(words.firstIndex(of: "register")!)
            let registered = try await runDynreg(words + ["--json"], environment: ["DYNREG_PRODUCT_SECRET": nil])
            #expect(registered.status == 0, "\(registered.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(registered.stdout.utf8)) as? [String: Any]
            let psk = try #require(object?["psk"] as? String)
            // mqtt-credentials derives a login the psk verifies, and the server's broker hook allows it.
            #expect(try await DemoDevice(banner: server.stdout).brokerAllows(psk: psk, server: server))
        }
    }
}
