import Foundation
import Synchronization
import Testing

#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// `dynreg serve` as a subprocess on a free port, with a known admin token: the CLI tests' real server.
final class RunningServer: @unchecked Sendable {
    static let adminToken = "cli-test-admin-token-0123456789"
    let process = Process()
    let dataDirectory: URL
    let baseURL: String
    /// Everything the server printed up to its listening line (and the demo product, unless `--no-demo`).
    let banner: String

    /// Starts a server on `dataDirectory`, a fresh temporary one by default.
    init(arguments: [String] = ["--no-demo"], dataDirectory: URL? = nil) throws {
        self.dataDirectory = dataDirectory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-cli-\(UUID().uuidString)")
        process.executableURL = DynregExecutable.url
        process.arguments = ["serve", "--port", "0", "--data-dir", self.dataDirectory.path] + arguments
        var environment = ProcessInfo.processInfo.environment
        environment["DYNREG_ADMIN_TOKEN"] = Self.adminToken
        process.environment = environment
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = FileHandle.nullDevice
        try process.run()
        // Read on a plain thread so a silent server cannot hang the test: give up after 60 s.
        let done = DispatchSemaphore(value: 0)
        let text = Mutex("")
        let expectDemo = !arguments.contains("--no-demo") && dataDirectory == nil
        Thread.detachNewThread {
            var seen = ""
            while true {
                let data = stdout.fileHandleForReading.availableData
                if data.isEmpty { break }
                seen += String(decoding: data, as: UTF8.self)
                if seen.contains("dynreg listening on "), !expectDemo || seen.contains("--product-secret") { break }
            }
            text.withLock { $0 = seen }
            done.signal()
        }
        _ = done.wait(timeout: .now() + 60)
        banner = text.withLock { $0 }
        guard let line = banner.split(separator: "\n").first(where: { $0.hasPrefix("dynreg listening on ") }) else {
            process.terminate()
            throw RunningServerError.didNotStart
        }
        baseURL = String(line.dropFirst("dynreg listening on ".count))
    }

    static func with<T>(arguments: [String] = ["--no-demo"], _ body: (RunningServer) throws -> T) throws -> T {
        let server = try RunningServer(arguments: arguments)
        defer { server.stop() }
        return try body(server)
    }

    static func with<T>(arguments: [String] = ["--no-demo"], _ body: (RunningServer) async throws -> T) async throws -> T {
        let server = try RunningServer(arguments: arguments)
        defer { server.stop() }
        return try await body(server)
    }

    /// Runs `dynreg` against this server.
    func dynreg(_ arguments: [String], token: String? = RunningServer.adminToken) throws -> CommandResult {
        var environment = ["DYNREG_SERVER": baseURL, "DYNREG_ADMIN_TOKEN": ""]
        if let token { environment["DYNREG_ADMIN_TOKEN"] = token }
        return try DynregExecutable.run(arguments + ["--data-dir", dataDirectory.path], environment: environment)
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

    /// Stops the server and keeps its data directory (to start another server on it).
    func terminate() {
        guard process.isRunning else { return }
        process.terminate()
        // Graceful shutdown waits for idle keep-alive connections; a test need not.
        let deadline = Date().addingTimeInterval(3)
        while process.isRunning, Date() < deadline { Thread.sleep(forTimeInterval: 0.05) }
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        process.waitUntilExit()
    }

    /// Stops the server and removes its data directory.
    func stop() {
        terminate()
        try? FileManager.default.removeItem(at: dataDirectory)
    }
}

enum RunningServerError: Error { case didNotStart }
