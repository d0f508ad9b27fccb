import DynRegTestSupport
import Foundation
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `dynreg serve` with a known admin token, and the CLI pointed at it: the command-line tests' real server.
struct RunningServer: Sendable {
    static let adminToken = "cli-test-admin-token-0123456789abcdef"
    static let brokerToken = "cli-test-broker-token-0123456789abcdef"
    let process: ServerProcess
    var baseURL: String { process.baseURL }
    var dataDirectory: URL { process.dataDirectory }
    /// Everything the server printed on standard output: the listening line, the demo product.
    var banner: String { process.stdout }

    /// Runs `body` against a server on `dataDirectory` (a fresh temporary one by default). With the demo on, it
    /// waits for the demo product's register command on a fresh directory.
    static func with<T>(
        arguments: [String] = ["--no-demo"], dataDirectory: URL? = nil, _ body: (RunningServer) async throws -> T
    ) async throws -> T {
        let expectDemo = !arguments.contains("--no-demo") && dataDirectory == nil
        return try await ServerProcess.with(
            arguments: arguments, environment: ["DYNREG_ADMIN_TOKEN": adminToken, "DYNREG_BROKER_TOKEN": brokerToken],
            dataDirectory: dataDirectory,
            ready: { !expectDemo || $0.contains("--product-secret") }
        ) { process in
            try await body(RunningServer(process: process))
        }
    }

    /// Runs `dynreg` against this server.
    func dynreg(_ arguments: [String], token: String? = RunningServer.adminToken) async throws -> CommandOutput {
        try await runDynreg(
            arguments + ["--data-dir", dataDirectory.path],
            environment: ["DYNREG_SERVER": baseURL, "DYNREG_ADMIN_TOKEN": token ?? ""])
    }

    /// Calls the admin API directly; returns the decoded JSON object.
    func admin(_ method: String, _ path: String, body: String? = nil) async throws -> [String: Any] {
        var request = URLRequest(url: URL(string: baseURL + "/admin/v1" + path)!)
        request.httpMethod = method
        request.setValue("Bearer \(Self.adminToken)", forHTTPHeaderField: "Authorization")
        request.setValue("close", forHTTPHeaderField: "Connection")
        if let body {
            request.setValue("application/json", forHTTPHeaderField: "Content-Type")
            request.httpBody = Data(body.utf8)
        }
        let (data, _) = try await URLSession.shared.data(for: request)
        return try #require(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    }

    func createProduct(_ json: String = #"{"name":"cli-test"}"#) async throws -> (id: String, secret: String) {
        let product = try await admin("POST", "/products", body: json)
        return (try #require(product["productId"] as? String), try #require(product["productSecret"] as? String))
    }
}
