package import DynRegStore
package import Foundation
import ServiceLifecycle
import Subprocess
import Synchronization
import SystemPackage

// One way for every test to start a program. swift-subprocess waits without blocking a thread: the cooperative
// pool has two threads on this machine, and a test that blocked one of them stalled the in-process servers.

/// What a finished command printed, and how it ended.
package struct CommandOutput: Sendable {
    /// The exit code, or 128 + the signal that ended it.
    package var status: Int32
    package var stdout: String
    package var stderr: String
}

/// Executables the build put beside the test bundle.
package enum BuiltExecutable {
    /// `dynreg`, or the binary named by `DYNREG_TEST_DYNREG_BINARY` (to measure a release build).
    package static let dynreg: URL? = {
        if let path = ProcessInfo.processInfo.environment["DYNREG_TEST_DYNREG_BINARY"], !path.isEmpty {
            return URL(fileURLWithPath: path)
        }
        return beside(named: "dynreg")
    }()

    /// The first executable file called `name` in the test bundle's directory or one of its parents.
    package static func beside(named name: String) -> URL? {
        var directory = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL.deletingLastPathComponent()
        while directory.path != "/" {
            let candidate = directory.appendingPathComponent(name)
            var isDirectory: ObjCBool = false
            if FileManager.default.fileExists(atPath: candidate.path, isDirectory: &isDirectory),
                !isDirectory.boolValue,
                FileManager.default.isExecutableFile(atPath: candidate.path)
            {
                return candidate
            }
            directory = directory.deletingLastPathComponent()
        }
        return nil
    }

    /// `dynreg`, or an error that says the build did not make it.
    package static func requireDynreg() throws -> URL {
        guard let dynreg else { throw TestSupportError("the dynreg executable was not built (swift build first)") }
        return dynreg
    }
}

/// Runs a program to completion: `executable` is a path, or a name looked up in `PATH` when it has no `/`.
/// Environment values replace the inherited ones; `nil` removes a variable.
package func runCommand(
    _ executable: String,
    _ arguments: [String],
    environment: [String: String?] = [:],
    input: String? = nil
) async throws -> CommandOutput {
    let program: Executable = executable.contains("/") ? .path(FilePath(executable)) : .name(executable)
    let limit = 16 << 20
    let result = try await run(
        program,
        arguments: Arguments(arguments),
        environment: .inherit.updating(environmentKeys(environment)),
        input: .data(Data((input ?? "").utf8)),
        output: .data(limit: limit),
        error: .data(limit: limit)
    )
    return CommandOutput(
        status: result.terminationStatus.code,
        stdout: String(decoding: result.standardOutput, as: UTF8.self),
        stderr: String(decoding: result.standardError, as: UTF8.self))
}

/// Runs the built `dynreg` with `arguments`.
package func runDynreg(_ arguments: [String], environment: [String: String?] = [:]) async throws -> CommandOutput {
    try await runCommand(try BuiltExecutable.requireDynreg().path, arguments, environment: environment)
}

/// `dynreg serve` as a child process, as an operator runs it: on a free loopback port, with its own data directory.
package final class ServerProcess: Sendable {
    /// `http://127.0.0.1:PORT` (or https), from the server's `dynreg listening on` line.
    package let baseURL: String
    package let port: Int
    package let dataDirectory: URL
    package let processIdentifier: Int32
    private let output: Output
    private let sendSignal: @Sendable (Int32) -> Void

    private init(
        baseURL: String, port: Int, dataDirectory: URL, processIdentifier: Int32, output: Output,
        send: @escaping @Sendable (Int32) -> Void
    ) {
        self.processIdentifier = processIdentifier
        self.baseURL = baseURL
        self.port = port
        self.dataDirectory = dataDirectory
        self.output = output
        self.sendSignal = send
    }

    /// Everything the server has printed on standard output so far.
    package var stdout: String { output.text(\.stdout) }
    /// Everything the server has printed on standard error so far.
    package var stderr: String { output.text(\.stderr) }
    package var hasExited: Bool { output.state.withLock { $0.closed } }

    /// Starts `dynreg serve --port 0 --data-dir DIR ARGUMENTS`, waits until it listens (and until `ready` holds for
    /// its standard output), runs `body`, then stops it and waits for it to exit.
    ///
    /// - Parameters:
    ///   - dataDirectory: a directory to use and keep; by default a fresh one, removed afterwards.
    ///   - ready: what standard output must show besides the listening line before `body` runs.
    package static func with<T>(
        arguments: [String] = ["--no-demo"],
        environment: [String: String?] = [:],
        dataDirectory: URL? = nil,
        ready: @escaping @Sendable (String) -> Bool = { _ in true },
        executable: URL? = nil,
        _ body: (ServerProcess) async throws -> T
    ) async throws -> T {
        let program = try executable ?? BuiltExecutable.requireDynreg()
        let directory =
            dataDirectory
            ?? FileManager.default.temporaryDirectory.appendingPathComponent("dynreg-serve-\(UUID().uuidString)")
        defer { if dataDirectory == nil { try? FileManager.default.removeItem(at: directory) } }
        let output = Output()
        var failure: (any Error)?
        var value: T?
        _ = try await run(
            .path(FilePath(program.path)),
            arguments: Arguments(["serve", "--port", "0", "--data-dir", directory.path] + arguments),
            environment: .inherit.updating(environmentKeys(environment)),
            input: .none,
            output: .sequence,
            error: .sequence
        ) { execution in
            let send: @Sendable (Int32) -> Void = { number in try? execution.send(signal: Signal(rawValue: number)) }
            await withTaskGroup(of: Void.self) { readers in
                readers.addTask { await output.drain(execution.standardOutput, into: \.stdout) }
                readers.addTask { await output.drain(execution.standardError, into: \.stderr) }
                do {
                    let (baseURL, port) = try await output.waitForListening(ready: ready)
                    let server = ServerProcess(
                        baseURL: baseURL, port: port, dataDirectory: directory,
                        processIdentifier: execution.processIdentifier.value, output: output, send: send)
                    do {
                        value = try await body(server)
                    } catch {
                        failure = error
                    }
                    await server.stop()
                } catch {
                    failure = error
                    send(SIGKILL)
                }
                await readers.waitForAll()
            }
        }
        if let failure { throw failure }
        guard let value else { throw TestSupportError("dynreg serve ended without a result") }
        return value
    }

    /// Starts a server like ``with(arguments:environment:dataDirectory:ready:executable:_:)`` and returns once it
    /// listens, for tests that start several at once; ``stop(grace:)`` or ``kill()`` ends it.
    package static func start(
        arguments: [String] = ["--no-demo"],
        environment: [String: String?] = [:],
        dataDirectory: URL? = nil
    ) async throws -> ServerProcess {
        let (started, continuation) = AsyncStream.makeStream(of: Result<ServerProcess, any Error>.self)
        Task {
            do {
                try await with(arguments: arguments, environment: environment, dataDirectory: dataDirectory) {
                    server in
                    continuation.yield(.success(server))
                    _ = await server.output.waitForClose(within: .seconds(24 * 3600))
                }
            } catch {
                continuation.yield(.failure(error))
            }
            continuation.finish()
        }
        for await result in started { return try result.get() }
        throw TestSupportError("dynreg serve ended before it listened")
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace` (a test needs the port, not the drain).
    package func stop(grace: Duration = .seconds(3)) async {
        if hasExited { return }
        sendSignal(SIGTERM)
        if await output.waitForClose(within: grace) { return }
        await kill()
    }

    /// SIGKILL, as a crash would; waits until it has exited.
    package func kill() async {
        if hasExited { return }
        sendSignal(SIGKILL)
        _ = await output.waitForClose(within: .seconds(30))
    }

    /// Sends a signal, for example SIGHUP.
    package func signal(_ number: Int32) { sendSignal(number) }

    /// Whether the process ended (both its output streams closed) within `duration`.
    package func waitForExit(within duration: Duration) async -> Bool { await output.waitForClose(within: duration) }

    fileprivate final class Output: Sendable {
        struct State {
            var stdout: [UInt8] = []
            var stderr: [UInt8] = []
            var openStreams = 2
            var closed: Bool { openStreams == 0 }
        }
        let state = Mutex(State())

        func text(_ stream: KeyPath<State, [UInt8]>) -> String {
            state.withLock { String(decoding: $0[keyPath: stream], as: UTF8.self) }
        }

        func drain(
            _ sequence: SubprocessOutputSequence, into stream: any WritableKeyPath<State, [UInt8]> & Sendable
        ) async {
            do {
                for try await buffer in sequence {
                    let bytes = buffer.withUnsafeBytes { Array($0) }
                    state.withLock { $0[keyPath: stream].append(contentsOf: bytes) }
                }
            } catch {}
            state.withLock { $0.openStreams -= 1 }
        }

        /// Polls with `Task.sleep` so that waiting holds no thread.
        func waitForClose(within duration: Duration) async -> Bool {
            let deadline = ContinuousClock.now + duration
            while ContinuousClock.now < deadline {
                if state.withLock({ $0.closed }) { return true }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return state.withLock { $0.closed }
        }

        func waitForListening(ready: @Sendable (String) -> Bool) async throws -> (String, Int) {
            let marker = "dynreg listening on "
            let deadline = ContinuousClock.now + .seconds(60)
            while ContinuousClock.now < deadline {
                let (out, closed) = state.withLock { (String(decoding: $0.stdout, as: UTF8.self), $0.closed) }
                if let line = out.split(separator: "\n").first(where: { $0.hasPrefix(marker) }), ready(out) {
                    let url = String(line.dropFirst(marker.count))
                    if let port = url.split(separator: ":").last.flatMap({ Int($0) }) { return (url, port) }
                }
                if closed { break }
                try? await Task.sleep(for: .milliseconds(20))
            }
            throw TestSupportError(
                "dynreg serve did not report listening; stdout: \(text(\.stdout)) stderr: \(text(\.stderr))")
        }
    }
}

/// Migrates `store` and runs it around `body`, as the server's application does before and while it listens.
package func withRunning<Store: RegistrationStore, T>(
    _ store: Store, migrate: Bool = true, _ body: () async throws -> T
) async throws -> T {
    if migrate { _ = try await store.migrate() }
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await store.run() }
        defer { group.cancelAll() }
        return try await body()
    }
}

/// A failure of the test scaffolding itself, with a message that says what to do.
package struct TestSupportError: Error, CustomStringConvertible {
    package var description: String
    package init(_ description: String) { self.description = description }
}

private func environmentKeys(_ environment: [String: String?]) -> [Environment.Key: String?] {
    var keys: [Environment.Key: String?] = [:]
    for (name, value) in environment { keys[Environment.Key(stringLiteral: name)] = value }
    return keys
}

extension TerminationStatus {
    /// The shell's convention: the exit code, or 128 + the signal.
    fileprivate var code: Int32 {
        switch self {
        case .exited(let code): Int32(code)
        case .signaled(let signal): 128 + Int32(signal)
        }
    }
}
