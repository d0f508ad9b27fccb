import ArgumentParser
import DynRegLoad
import DynRegProtocol
import Foundation
import Histogram

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a server: register many distinct devices concurrently; report throughput and latency.",
        discussion: """
            Each of --devices registrations is signed as a device would sign it (timestamp now, random nonce) for \
            the device <prefix>-<i>; --concurrency requests are in flight at once, one per keep-alive \
            HTTP/1.1 connection. --health sends GET /health instead, and --livez GET /livez (which touches \
            nothing: the server's HTTP ceiling on this machine). Latency runs from writing a request to reading its whole answer; only answered requests \
            count towards it. Outcomes are counted per code: Success, the error code the server sent (legacy \
            numeric codes are shown by name), HTTP <status> for a status other than 200, or TransportError. \
            --auth measures broker logins (POST /device/auth, as EMQX calls it): it registers the devices first, \
            logs each in once (its first login activates it), then measures one login per device; allow counts as \
            Success. It needs the broker token (--broker-token or DYNREG_BROKER_TOKEN). \
            The exit status is 0 whenever the run completed, whatever the outcomes; it is non-zero for bad \
            options or when the server cannot be reached at all. Plain http:// only. The product secret may come \
            from DYNREG_PRODUCT_SECRET.
            """
    )

    @Option(help: "The server's base URL (http://127.0.0.1:8080).") var url: String
    @Option(help: "The product id (not needed with --health or --livez).") var productId: String?
    @Option(help: "The product secret (or DYNREG_PRODUCT_SECRET).") var productSecret: String?
    @Option(help: "How many devices to register (requests to send).") var devices = 1000
    @Option(help: "Requests in flight at once, one connection each.") var concurrency = 16
    @Flag(help: "Use the legacy /register/dev protocol (always hmacsha1).") var legacy = false
    @Flag(help: "Send GET /health instead of registrations.") var health = false
    @Flag(help: "Send GET /livez (touches nothing: the HTTP ceiling) instead of registrations.") var livez = false
    @Flag(help: "Measure broker logins over --devices freshly registered devices.") var auth = false
    @Option(help: "The broker token, for --auth (or DYNREG_BROKER_TOKEN).") var brokerToken: String?
    @Option(
        help: "The server's process id, on this machine: the report adds the server's CPU time per measured request.")
    var serverPid: Int32?
    @Flag(
        help: """
            Send a certificate signing request with each registration (a P-256 key made per device, before the \
            clock starts).
            """)
    var csr = false
    @Flag(help: "Print one JSON object instead of the report.") var json = false
    @Option(help: "hmacsha256 (default) or hmacsha1.") var algorithm: DynRegProtocol.SignatureAlgorithm?
    @Option(help: "Device names are <prefix>-<i>; random by default so that runs do not collide.")
    var devicePrefix: String?
    @Option(help: "Seconds to wait for one answer before counting a TransportError.") var timeout = 30
    @Option(help: "Event-loop threads of the load generator.") var threads = 1

    func validate() throws {
        guard devices >= 1 else { throw ValidationError("--devices must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard timeout >= 1 else { throw ValidationError("--timeout must be at least 1 second") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1-64") }
        guard LoadTarget(url: url) != nil else {
            throw ValidationError("--url must be an http:// URL with a host (the benchmark does not speak TLS)")
        }
        if [legacy, health, livez, auth].filter({ $0 }).count > 1 {
            throw ValidationError("--legacy, --health, --livez and --auth exclude each other")
        }
        if auth && csr { throw ValidationError("--csr does not go with --auth") }
        if csr && (legacy || health || livez) {
            throw ValidationError("--csr needs the current protocol (not --legacy, --health or --livez)")
        }
        if legacy, let algorithm, algorithm != .hmacSHA1 {
            throw ValidationError("--legacy requests are always signed with hmacsha1")
        }
        if let serverPid, ProcessCPU.seconds(pid: serverPid) == nil {
            throw ValidationError("--server-pid: no process \(serverPid) to read in /proc")
        }
        guard !health, !livez else { return }
        guard let productId else { throw ValidationError("missing --product-id") }
        guard ProductIdRules.isValid(productId) else {
            throw ValidationError("--product-id must be 1-32 characters of A-Z a-z 0-9 _ -")
        }
        if let devicePrefix {
            let longest = "\(devicePrefix)-\(devices - 1)"
            guard DeviceNameRules.isValid(longest) else {
                throw ValidationError(
                    "--device-prefix: device names (\(longest)) must be 1-48 characters of A-Z a-z 0-9 _ - . : @")
            }
        }
    }

    func run() async throws {
        let target = LoadTarget(url: url)!
        let mode: LoadMode
        var productSecretValue = ""
        if health || livez {
            mode = health ? .health : .livez
        } else {
            productSecretValue = try secret(
                productSecret, environment: "DYNREG_PRODUCT_SECRET", option: "--product-secret")
            guard ProductSecretRules.isValid(productSecretValue) else {
                throw CLIError("the product secret must be at least \(ProductSecretRules.minimumLength) characters")
            }
            mode = auth ? .auth : legacy ? .legacy : .current(algorithm ?? .hmacSHA256)
        }
        let prefix = devicePrefix ?? Self.randomPrefix()
        var token = ""
        var authBodies: [[UInt8]] = []
        if auth {
            token = try secret(brokerToken, environment: "DYNREG_BROKER_TOKEN", option: "--broker-token")
            authBodies = try await AuthBench.loginBodies(
                url: url, productId: productId ?? "", productSecret: productSecretValue, devicePrefix: prefix,
                count: devices, concurrency: concurrency, note: Self.note)
        }
        var csrs: [String] = []
        if csr {
            csrs = try RequestFactory.signingRequests(
                productId: productId ?? "", devicePrefix: prefix, count: devices, note: Self.note)
        }
        let factory = RequestFactory(
            mode: mode, target: target, productId: productId ?? "", productSecret: productSecretValue,
            devicePrefix: prefix, csrs: csrs, brokerToken: token, authBodies: authBodies)
        let generator = LoadGenerator(
            target: target, factory: factory, requests: devices, connections: concurrency, timeout: timeout,
            threads: threads)
        let result: LoadResult
        var serverCPUPerRequest: Double?
        do {
            if auth {
                // After a broker restart every device logs in again: activated devices, no store writes.
                let first = try await generator.run(progressPrefix: "dynreg bench: first logins: ")
                Self.note(
                    "first logins (each activates its device): \(format(first.requestsPerSecond, 0)) requests/s, "
                        + "\(first.tally.outcomes[LoadTally.success] ?? 0) allowed")
            }
            let before = serverPid.flatMap(ProcessCPU.seconds(pid:))
            result = try await generator.run(progressPrefix: "dynreg bench: ")
            if let before, let after = serverPid.flatMap(ProcessCPU.seconds(pid:)), devices > 0 {
                serverCPUPerRequest = (after - before) / Double(devices)
            }
        } catch let error as LoadError {
            throw CLIError(error.description)
        }
        if let note = result.tally.firstTransportError {
            Self.note("first transport error: \(note)")
        }
        printNow(
            json
                ? jsonReport(result, mode: mode, serverCPU: serverCPUPerRequest)
                : humanReport(result, mode: mode, prefix: prefix, serverCPU: serverCPUPerRequest))
    }

    private static func note(_ text: String) {
        FileHandle.standardError.write(Data("dynreg bench: \(text)\n".utf8))
    }

    /// A prefix that names no device of an earlier run: `b` and 8 random letters or digits.
    static func randomPrefix() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return "b" + String((0..<8).map { _ in alphabet.randomElement()! })
    }

    // MARK: Reports

    private func description(of mode: LoadMode) -> String {
        switch mode {
        case .health: return "GET \(LoadMode.healthPath)"
        case .livez: return "GET \(LoadMode.livezPath)"
        case .current(let algorithm): return "POST \(RegistrationPath.current) (\(algorithm.name)\(csr ? ", CSR" : ""))"
        case .legacy: return "POST \(RegistrationPath.legacy) (legacy, hmacsha1)"
        case .auth: return "POST \(LoadMode.authPath) (broker logins)"
        }
    }

    private func humanReport(_ result: LoadResult, mode: LoadMode, prefix: String, serverCPU: Double?) -> String {
        let tally = result.tally
        var lines = [
            "requests     \(devices) x \(description(of: mode)), concurrency \(min(concurrency, devices))"
                + (mode.isProbe ? "" : ", devices \(prefix)-0..\(prefix)-\(devices - 1)"),
            "duration     \(format(result.durationSeconds, 2)) s",
            "throughput   \(format(result.requestsPerSecond, 0)) requests/s",
        ]
        if tally.histogram.totalCount > 0 {
            lines.append(
                "latency      p50 \(format(tally.millis(50), 2)) ms  p90 \(format(tally.millis(90), 2)) ms  "
                    + "p99 \(format(tally.millis(99), 2)) ms  max \(format(tally.maxMillis, 2)) ms")
        }
        if let serverCPU { lines.append("server CPU   \(format(serverCPU * 1e6, 1)) µs per request") }
        lines.append("outcomes")
        let width = max(20, tally.outcomes.keys.map(\.count).max() ?? 0)
        for (code, count) in tally.sortedOutcomes {
            lines.append("  " + code.padding(toLength: width, withPad: " ", startingAt: 0) + "  \(count)")
        }
        return lines.joined(separator: "\n")
    }

    private func jsonReport(_ result: LoadResult, mode: LoadMode, serverCPU: Double?) -> String {
        let tally = result.tally
        let outcomes = "{" + tally.sortedOutcomes.map { "\(jsonString($0.0)):\($0.1)" }.joined(separator: ",") + "}"
        return jsonObject([
            "requestsPerSecond": RawJSON(text: format(result.requestsPerSecond, 1)),
            "p50Ms": RawJSON(text: format(tally.millis(50), 3)),
            "p90Ms": RawJSON(text: format(tally.millis(90), 3)),
            "p99Ms": RawJSON(text: format(tally.millis(99), 3)),
            "maxMs": RawJSON(text: format(tally.maxMillis, 3)),
            "outcomes": RawJSON(text: outcomes),
            "devices": devices,
            "concurrency": min(concurrency, devices),
            "durationSeconds": RawJSON(text: format(result.durationSeconds, 3)),
            "endpoint": description(of: mode),
            // null without --server-pid.
            "serverCPUMicrosPerRequest": serverCPU.map { RawJSON(text: format($0 * 1e6, 1)) } as Any,
        ])
    }

    private func format(_ value: Double, _ decimals: Int) -> String {
        String(format: "%.\(decimals)f", value)
    }

    private func jsonString(_ text: String) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return String(decoding: (try? encoder.encode(text)) ?? Data("\"\"".utf8), as: UTF8.self)
    }
}

/// A process's CPU time (user and system) from `/proc/PID/stat`, on Linux.
enum ProcessCPU {
    static func seconds(pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
            let end = stat.lastIndex(of: ")")
        else { return nil }
        // After the command name: state is field 3, utime and stime are fields 14 and 15.
        let fields = stat[stat.index(after: end)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }
}
