import AsyncHTTPClient
import DynRegProtocol
import DynRegTestSupport
import Foundation
import NIOCore
import NIOHTTP1
import Testing

@Suite(
    "dynreg register against dynreg serve",
    .enabled(if: BuiltExecutable.dynreg != nil, "the dynreg executable was not built"))
struct ServeAndRegisterTests {
    @Test("the demo product's psk from dynreg register is accepted by mqtt-credentials and the broker hook")
    func demoFlow() async throws {
        try await ServerProcess.with(arguments: [], ready: { $0.contains("--product-secret") }) { server in
            let lines = server.stdout.split(separator: "\n").map(String.init)
            let command = try #require(lines.first { $0.contains("dynreg register") })
            var words = command.split(separator: " ").map(String.init)
            words.removeFirst(words.firstIndex(of: "register")!)
            let productId = try #require(
                lines.first { $0.contains("ProductId:") }?.split(separator: " ").last.map(String.init))
            let url = try #require(
                lines.first { $0.hasPrefix("dynreg listening on ") }?.split(separator: " ").last.map(String.init))
            let registered = try await runDynreg(words + ["--json"], environment: ["DYNREG_PRODUCT_SECRET": nil])
            #expect(registered.status == 0, "\(registered.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(registered.stdout.utf8)) as? [String: Any]
            let psk = try #require(object?["psk"] as? String)
            let mqtt = try await runDynreg([
                "mqtt-credentials", "--product-id", productId, "--device-name", "demo-device-1", "--psk", psk, "--json",
            ])
            #expect(mqtt.status == 0, "\(mqtt.stderr)")
            let credentials = try JSONDecoder().decode(MQTTCredentials.self, from: Data(mqtt.stdout.utf8))
            #expect(MQTTCredentials.verify(username: credentials.username, password: credentials.password, psk: psk))
            // The server agrees: the broker hook allows the login.
            var request = HTTPClientRequest(url: url + "/device/auth")
            request.method = .POST
            let brokerToken = try String(
                contentsOf: server.dataDirectory.appendingPathComponent("broker-token"), encoding: .utf8)
            request.headers.add(
                name: "Authorization", value: "Bearer \(brokerToken.trimmingCharacters(in: .whitespacesAndNewlines))")
            request.body = .bytes(
                ByteBuffer(
                    bytes: try JSONEncoder().encode([
                        "clientid": credentials.clientId, "username": credentials.username,
                        "password": credentials.password,
                    ])))
            let response = try await HTTPClient.shared.execute(request, timeout: .seconds(10))
            let body = try await response.body.collect(upTo: 1 << 16)
            let answer = try JSONSerialization.jsonObject(with: Data(body.readableBytesView)) as? [String: Any]
            #expect(answer?["result"] as? String == "allow", "\(String(buffer: body))")
        }
    }
}
