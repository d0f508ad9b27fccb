import Foundation
import Synchronization

/// A `dynreg serve` child process, as an operator would run it.
final class ServerProcess: @unchecked Sendable {
    let process: Process
    let port: Int
    let logFile: URL

    /// `.build/<config>/dynreg`, beside the test bundle, or `DYNREG_TEST_DYNREG_BINARY` (to measure a release build).
    static var executable: URL {
        if let path = ProcessInfo.processInfo.environment["DYNREG_TEST_DYNREG_BINARY"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        let bundle = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
        var directory = bundle.deletingLastPathComponent()
        while !FileManager.default.isExecutableFile(atPath: directory.appendingPathComponent("dynreg").path),
            directory.path != "/"
        {
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("dynreg")
    }

    private init(process: Process, port: Int, logFile: URL) {
        self.process = process
        self.port = port
        self.logFile = logFile
    }

    /// Starts the server on a free port and waits for its `dynreg listening on` line.
    static func start(arguments: [String], environment: [String: String], name: String) async throws -> ServerProcess {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-\(name)-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        let logFile = directory.appendingPathComponent("stderr.log")
        _ = FileManager.default.createFile(atPath: logFile.path, contents: nil)

        let process = Process()
        process.executableURL = executable
        process.arguments =
            ["serve", "--host", "127.0.0.1", "--port", "0", "--no-demo", "--data-dir", directory.path] + arguments
        var env = ProcessInfo.processInfo.environment
        for (key, value) in environment { env[key] = value }
        process.environment = env
        let stdout = Pipe()
        process.standardOutput = stdout
        process.standardError = try FileHandle(forWritingTo: logFile)
        let output = LockedText()
        stdout.fileHandleForReading.readabilityHandler = { handle in
            let data = handle.availableData
            if data.isEmpty {
                handle.readabilityHandler = nil
            } else {
                output.append(String(decoding: data, as: UTF8.self))
            }
        }
        try process.run()

        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            if let port = Self.listeningPort(in: output.text) {
                return ServerProcess(process: process, port: port, logFile: logFile)
            }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        if process.isRunning { process.terminate() }
        let log = (try? String(contentsOf: logFile, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(at: directory)
        throw ServerError(
            description: "dynreg serve (\(name)) did not report listening; stdout: \(output.text) stderr: \(log)")
    }

    private static func listeningPort(in text: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix("dynreg listening on http://127.0.0.1:") {
            return Int(line.split(separator: ":").last ?? "")
        }
        return nil
    }

    // Waiting polls with Task.sleep: blocking a thread of the (two-thread) cooperative pool would stall
    // every other test in the process.

    func kill() async {
        Foundation.kill(process.processIdentifier, SIGKILL)
        await waitForExit(within: .seconds(30))
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace` (the test needs the port, not the drain);
    /// then removes its data directory.
    func stop(grace: Duration = .seconds(3)) async {
        if process.isRunning {
            process.terminate()
            await waitForExit(within: grace)
            if process.isRunning { await kill() }
        }
        try? FileManager.default.removeItem(at: logFile.deletingLastPathComponent())
    }

    private func waitForExit(within duration: Duration) async {
        let deadline = ContinuousClock.now + duration
        while process.isRunning && ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(20)) }
    }

    var stderr: String { (try? String(contentsOf: logFile, encoding: .utf8)) ?? "" }

    struct ServerError: Error, CustomStringConvertible {
        var description: String
    }
}

final class LockedText: Sendable {
    private let value = Mutex("")

    func append(_ text: String) { value.withLock { $0 += text } }
    var text: String { value.withLock { $0 } }
}
