import ArgumentParser
import AsyncHTTPClient
import Atomics
import Crypto
import DynRegProtocol
import Foundation
import Histogram
import NIOCore
import NIOHTTP1
import NIOPosix
import X509

struct Bench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Load-test a server: register many distinct devices concurrently; report throughput and latency.",
        discussion: """
            Each of --devices registrations is signed as a device would sign it (timestamp now, random nonce) for \
            the device <prefix>-<i>; --concurrency requests are in flight at once, one per keep-alive \
            HTTP/1.1 connection. --health sends GET /health instead, to measure the server's ceiling on this \
            machine. Latency runs from writing a request to reading its whole answer; only answered requests \
            count towards it. Outcomes are counted per code: Success, the error code the server sent (legacy \
            numeric codes are shown by name), HTTP <status> for a status other than 200, or TransportError. \
            The exit status is 0 whenever the run completed, whatever the outcomes; it is non-zero for bad \
            options or when the server cannot be reached at all. Plain http:// only. The product secret may come \
            from DYNREG_PRODUCT_SECRET.
            """
    )

    @Option(help: "The server's base URL (http://127.0.0.1:8080).") var url: String
    @Option(help: "The product id (not needed with --health).") var productId: String?
    @Option(help: "The product secret (or DYNREG_PRODUCT_SECRET).") var productSecret: String?
    @Option(help: "How many devices to register (requests to send).") var devices = 1000
    @Option(help: "Requests in flight at once, one connection each.") var concurrency = 16
    @Flag(help: "Use the legacy /register/dev protocol (always hmacsha1).") var legacy = false
    @Flag(help: "Send GET /health instead of registrations.") var health = false
    @Flag(help: "Send a certificate signing request with each registration (a P-256 key made per device, before the clock starts).")
    var csr = false
    @Flag(help: "Print one JSON object instead of the report.") var json = false
    @Option(help: "hmacsha256 (default) or hmacsha1.") var algorithm: DynRegProtocol.SignatureAlgorithm?
    @Option(help: "Device names are <prefix>-<i>; random by default so that runs do not collide.")
    var devicePrefix: String?
    @Option(help: "Seconds to wait for one answer before counting a TransportError.") var timeout = 30
    @Option(help: "Event-loop threads of the load generator.") var threads = 1
    @Option(help: .hidden) var engine: BenchEngine = .nio

    func validate() throws {
        guard devices >= 1 else { throw ValidationError("--devices must be at least 1") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard timeout >= 1 else { throw ValidationError("--timeout must be at least 1 second") }
        guard (1...64).contains(threads) else { throw ValidationError("--threads must be 1-64") }
        guard BenchTarget(url: url) != nil else {
            throw ValidationError("--url must be an http:// URL with a host (the benchmark does not speak TLS)")
        }
        if legacy && health { throw ValidationError("--legacy and --health exclude each other") }
        if csr && (legacy || health) { throw ValidationError("--csr needs the current protocol (not --legacy or --health)") }
        if legacy, let algorithm, algorithm != .hmacSHA1 {
            throw ValidationError("--legacy requests are always signed with hmacsha1")
        }
        guard !health else { return }
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
        let target = BenchTarget(url: url)!
        let mode: BenchMode
        var productSecretValue = ""
        if health {
            mode = .health
        } else {
            productSecretValue = try secret(
                productSecret, environment: "DYNREG_PRODUCT_SECRET", option: "--product-secret")
            guard ProductSecretRules.isValid(productSecretValue) else {
                throw CLIError("the product secret must be at least \(ProductSecretRules.minimumLength) characters")
            }
            mode = legacy ? .legacy : .current(algorithm ?? .hmacSHA256)
        }
        let prefix = devicePrefix ?? Self.randomPrefix()
        var csrs: [[UInt8]] = []
        if csr {
            csrs = try Self.signingRequests(productId: productId ?? "", prefix: prefix, count: devices)
        }
        let template = RequestFactory(
            mode: mode, target: target, productId: productId ?? "", productSecret: productSecretValue,
            devicePrefix: prefix, csrs: csrs)
        try template.selfCheck(productSecret: productSecretValue)

        let group = MultiThreadedEventLoopGroup(numberOfThreads: threads)
        let result: BenchResult
        do {
            let address: SocketAddress
            do {
                address = try SocketAddress.makeAddressResolvingHost(target.host, port: target.port)
                try await ClientBootstrap(group: group).connectTimeout(.seconds(5)).connect(to: address)
                    .flatMap { $0.close() }.get()
            } catch {
                throw CLIError("cannot connect to \(target.host):\(target.port): \(error)")
            }
            let counters = BenchCounters(total: devices)
            let progress = Task { await BenchProgress(counters: counters).run() }
            let connections = min(concurrency, devices)
            switch engine {
            case .nio:
                result = try await runNIO(
                    group: group, address: address, template: template, counters: counters, connections: connections)
            case .ahc:
                result = try await runAsyncHTTPClient(
                    group: group, target: target, template: template, counters: counters, connections: connections)
            }
            progress.cancel()
            await progress.value
        } catch {
            try? await group.shutdownGracefully()
            throw error
        }
        try? await group.shutdownGracefully()
        if let note = result.firstTransportError {
            FileHandle.standardError.write(Data("dynreg bench: first transport error: \(note)\n".utf8))
        }
        printNow(json ? jsonReport(result, mode: mode) : humanReport(result, mode: mode, prefix: prefix))
    }

    /// One PEM CSR per device, JSON-escaped, made before the measurement: a device makes its key and request before
    /// it calls the server, so their cost is not the server's.
    static func signingRequests(productId: String, prefix: String, count: Int) throws -> [[UInt8]] {
        FileHandle.standardError.write(Data("dynreg bench: making \(count) keys and certificate signing requests\n".utf8))
        var requests: [[UInt8]] = []
        requests.reserveCapacity(count)
        for index in 0..<count {
            let key = P256.Signing.PrivateKey(compactRepresentable: false)
            let request = try CertificateSigningRequest(
                version: .v1, subject: try DistinguishedName { CommonName(productId + "\(prefix)-\(index)") },
                privateKey: Certificate.PrivateKey(key), attributes: CertificateSigningRequest.Attributes(),
                signatureAlgorithm: .ecdsaWithSHA256)
            // PEM needs no JSON escaping but for its line breaks.
            var escaped: [UInt8] = []
            for byte in try request.serializeAsPEM().pemString.utf8 {
                if byte == 0x0A { escaped += [0x5C, UInt8(ascii: "n")] } else { escaped.append(byte) }
            }
            requests.append(escaped)
            // About 100 µs each: a large run takes a while, so say how far it is.
            if count >= 20_000, (index + 1) % (count / 10) == 0 {
                FileHandle.standardError.write(Data("dynreg bench: \(index + 1)/\(count) requests made\n".utf8))
            }
        }
        return requests
    }

    /// A prefix that names no device of an earlier run: `b` and 8 random letters or digits.
    static func randomPrefix() -> String {
        let alphabet = Array("abcdefghijklmnopqrstuvwxyz0123456789")
        return "b" + String((0..<8).map { _ in alphabet.randomElement()! })
    }

    // MARK: Engines

    /// A hand-written HTTP/1.1 client per connection on NIO: 15-20 µs of client CPU per request, mostly in the kernel.
    private func runNIO(
        group: MultiThreadedEventLoopGroup, address: SocketAddress, template: RequestFactory,
        counters: BenchCounters, connections: Int
    ) async throws -> BenchResult {
        let loops = Array(group.makeIterator())
        let states = loops.map { LoopState(loop: $0, factory: template, timeout: timeout) }
        let started = NIODeadline.now()
        var finished: [EventLoopFuture<Void>] = []
        for slot in 0..<connections {
            let state = states[slot % states.count]
            let worker = BenchWorker(state: state, counters: counters, address: address)
            finished.append(worker.finished.futureResult)
            state.loop.execute { worker.start() }
        }
        try await EventLoopFuture.andAllSucceed(finished, on: loops[0]).get()
        let duration = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        var total = BenchTally(timeout: timeout)
        for state in states {
            total.add(try await state.loop.submit { state.tally }.get())
        }
        return BenchResult(tally: total, durationSeconds: duration)
    }

    /// The same load through AsyncHTTPClient, kept to compare the two clients' overhead (see docs/performance.md).
    private func runAsyncHTTPClient(
        group: MultiThreadedEventLoopGroup, target: BenchTarget, template: RequestFactory,
        counters: BenchCounters, connections: Int
    ) async throws -> BenchResult {
        var configuration = HTTPClient.Configuration()
        configuration.connectionPool = .init(
            idleTimeout: .seconds(60), concurrentHTTP1ConnectionsPerHostSoftLimit: connections)
        configuration.httpVersion = .http1Only
        configuration.decompression = .disabled
        let client = HTTPClient(eventLoopGroup: group, configuration: configuration)
        let url = "http://\(target.hostHeader)\(template.path)"
        let timeout = self.timeout
        let started = NIODeadline.now()
        let total = await withTaskGroup(of: BenchTally.self) { tasks in
            for _ in 0..<connections {
                tasks.addTask {
                    var factory = template
                    var tally = BenchTally(timeout: timeout)
                    while let index = counters.claim() {
                        var request = HTTPClientRequest(url: url)
                        let prepared = factory.prepare(index: index, timestamp: Int64(time(nil)))
                        request.method = prepared.isPost ? .POST : .GET
                        request.headers = HTTPHeaders(prepared.headers)
                        if prepared.isPost { request.body = .bytes(ByteBuffer(bytes: prepared.body)) }
                        let sent = NIODeadline.now()
                        do {
                            let response = try await client.execute(request, timeout: .seconds(Int64(timeout)))
                            let body = try await response.body.collect(upTo: 1 << 20)
                            let outcome = body.withUnsafeReadableBytes {
                                factory.mode.classify(status: Int(response.status.code), body: $0)
                            }
                            tally.record(outcome: outcome, micros: (NIODeadline.now() - sent).nanoseconds / 1000)
                        } catch {
                            tally.recordTransportError("\(error)")
                        }
                        counters.completed.wrappingIncrement(ordering: .relaxed)
                    }
                    return tally
                }
            }
            var total = BenchTally(timeout: timeout)
            for await tally in tasks { total.add(tally) }
            return total
        }
        let duration = Double((NIODeadline.now() - started).nanoseconds) / 1e9
        try await client.shutdown()
        return BenchResult(tally: total, durationSeconds: duration)
    }

    // MARK: Reports

    private func description(of mode: BenchMode) -> String {
        switch mode {
        case .health: return "GET /health"
        case .current(let algorithm): return "POST \(RegistrationPath.current) (\(algorithm.name)\(csr ? ", CSR" : ""))"
        case .legacy: return "POST \(RegistrationPath.legacy) (legacy, hmacsha1)"
        }
    }

    private func humanReport(_ result: BenchResult, mode: BenchMode, prefix: String) -> String {
        let tally = result.tally
        var lines = [
            "requests     \(devices) x \(description(of: mode)), concurrency \(min(concurrency, devices))"
                + (health ? "" : ", devices \(prefix)-0..\(prefix)-\(devices - 1)"),
            "duration     \(format(result.durationSeconds, 2)) s",
            "throughput   \(format(result.requestsPerSecond, 0)) requests/s",
        ]
        if tally.histogram.totalCount > 0 {
            lines.append(
                "latency      p50 \(format(tally.millis(50), 2)) ms  p90 \(format(tally.millis(90), 2)) ms  "
                    + "p99 \(format(tally.millis(99), 2)) ms  max \(format(tally.maxMillis, 2)) ms")
        }
        lines.append("outcomes")
        let width = max(20, tally.outcomes.keys.map(\.count).max() ?? 0)
        for (code, count) in tally.sortedOutcomes {
            lines.append("  " + code.padding(toLength: width, withPad: " ", startingAt: 0) + "  \(count)")
        }
        return lines.joined(separator: "\n")
    }

    private func jsonReport(_ result: BenchResult, mode: BenchMode) -> String {
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

enum BenchEngine: String, ExpressibleByArgument, Sendable {
    case nio, ahc
}

// MARK: - What to send

/// Where requests go: connect to host:port, name `hostHeader` in `Host`, sign for `canonicalHost`.
struct BenchTarget: Sendable {
    var host: String
    var port: Int
    var hostHeader: String
    var canonicalHost: String
    /// The URL's path without a trailing `/` or a registration path, prepended to each request's path.
    var pathPrefix: String

    init?(url string: String) {
        guard let components = URLComponents(string: string), components.scheme?.lowercased() == "http",
            var host = components.host, !host.isEmpty
        else { return nil }
        if host.hasPrefix("["), host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        self.host = host
        port = components.port ?? 80
        let bracketed = host.contains(":") ? "[\(host)]" : host
        hostHeader = components.port == nil ? bracketed : "\(bracketed):\(port)"
        canonicalHost = CanonicalHost.fromHostHeader(hostHeader)
        var path = components.percentEncodedPath
        for known in [RegistrationPath.current, RegistrationPath.legacy, "/health"] where path.hasSuffix(known) {
            path.removeLast(known.count)
        }
        while path.hasSuffix("/") { path.removeLast() }
        pathPrefix = path
    }
}

enum BenchMode: Sendable {
    case current(DynRegProtocol.SignatureAlgorithm)
    case legacy
    case health

    /// The outcome of one answer, reading only as much of the body as that takes: `nil` is success.
    func classify(status: Int, body: UnsafeRawBufferPointer) -> String? {
        guard status == 200 else { return "HTTP \(status)" }
        switch self {
        case .health:
            return nil
        case .current:
            if JSONScan.find(#""Error""#, in: body) != nil {
                return JSONScan.stringValue(of: #""Code""#, in: body) ?? "InvalidResponse"
            }
            return JSONScan.find(#""Payload""#, in: body) != nil ? nil : "InvalidResponse"
        case .legacy:
            guard let code = JSONScan.integerValue(of: #""code""#, in: body) else { return "InvalidResponse" }
            if code == 0 { return JSONScan.find(#""payload""#, in: body) != nil ? nil : "InvalidResponse" }
            return RegistrationErrorCode.forLegacyCode(code)?.code ?? "code \(code)"
        }
    }
}

/// Byte-level lookups in a small JSON answer: enough to classify it without a JSON decoder.
enum JSONScan {
    static func find(_ needle: StaticString, in haystack: UnsafeRawBufferPointer) -> Int? {
        let count = needle.utf8CodeUnitCount
        guard count > 0, haystack.count >= count else { return nil }
        let first = needle.utf8Start[0]
        var index = 0
        while index <= haystack.count - count {
            if haystack[index] == first {
                var matched = 1
                while matched < count, haystack[index + matched] == needle.utf8Start[matched] { matched += 1 }
                if matched == count { return index }
            }
            index += 1
        }
        return nil
    }

    /// Index of the first byte of the value after `"key":`, white space skipped.
    private static func valueStart(of key: StaticString, in body: UnsafeRawBufferPointer) -> Int? {
        guard var index = find(key, in: body) else { return nil }
        index += key.utf8CodeUnitCount
        while index < body.count, body[index] == UInt8(ascii: " ") { index += 1 }
        guard index < body.count, body[index] == UInt8(ascii: ":") else { return nil }
        index += 1
        while index < body.count, body[index] == UInt8(ascii: " ") { index += 1 }
        return index < body.count ? index : nil
    }

    static func stringValue(of key: StaticString, in body: UnsafeRawBufferPointer) -> String? {
        guard let start = valueStart(of: key, in: body), body[start] == UInt8(ascii: "\"") else { return nil }
        var end = start + 1
        while end < body.count, body[end] != UInt8(ascii: "\"") { end += 1 }
        guard end < body.count else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: body[(start + 1)..<end]), as: UTF8.self)
    }

    static func integerValue(of key: StaticString, in body: UnsafeRawBufferPointer) -> Int? {
        guard var index = valueStart(of: key, in: body) else { return nil }
        let negative = body[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        var value = 0
        var digits = 0
        while index < body.count, body[index] >= UInt8(ascii: "0"), body[index] <= UInt8(ascii: "9"), digits < 18 {
            value = value * 10 + Int(body[index] - UInt8(ascii: "0"))
            index += 1
            digits += 1
        }
        return digits == 0 ? nil : (negative ? -value : value)
    }
}

/// Builds signed requests. One copy per event loop: it reuses scratch buffers and copies a keyed HMAC state,
/// so a request costs one body hash and one HMAC over the string to sign.
struct RequestFactory: Sendable {
    let mode: BenchMode
    let path: String
    private let head: [UInt8]
    private let namePrefix: [UInt8]
    private let productId: [UInt8]
    private let bodyPrefix: [UInt8]
    private let signPrefix: [UInt8]
    private let hostHeader: String
    // Keyed once; HMAC is a value type over copy-on-write hash states, so copying it is cheap.
    private let hmacSHA256: HMAC<SHA256>?
    private let hmacSHA1: HMAC<Insecure.SHA1>?
    private var random: WyRand
    /// JSON-escaped PEM CSRs by device index, or empty.
    private let csrs: [[UInt8]]
    // Scratch, reused.
    private var name: [UInt8] = []
    private var body: [UInt8] = []
    private var toSign: [UInt8] = []
    private var signature: [UInt8] = []
    private var timestamp: [UInt8] = []
    private var nonce: [UInt8] = []

    init(
        mode: BenchMode, target: BenchTarget, productId: String, productSecret: String, devicePrefix: String,
        csrs: [[UInt8]] = []
    ) {
        self.mode = mode
        self.csrs = csrs
        let endpoint: String
        let method: String
        switch mode {
        case .health: endpoint = "/health"; method = "GET"
        case .current: endpoint = RegistrationPath.current; method = "POST"
        case .legacy: endpoint = RegistrationPath.legacy; method = "POST"
        }
        path = target.pathPrefix + endpoint
        hostHeader = target.hostHeader
        var head = "\(method) \(path) HTTP/1.1\r\nHost: \(target.hostHeader)\r\n"
        switch mode {
        case .health:
            head += "\r\n"
        case .current(let algorithm):
            head += "Content-Type: application/json; charset=utf-8\r\nX-TC-Algorithm: \(algorithm.name)\r\n"
        case .legacy:
            head += "Content-Type: application/json\r\n"
        }
        self.head = Array(head.utf8)
        namePrefix = Array("\(devicePrefix)-".utf8)
        self.productId = Array(productId.utf8)
        // Product ids and device names are validated to need no JSON escaping.
        bodyPrefix = Array(#"{"ProductId":"\#(productId)","DeviceName":""#.utf8)
        var signAlgorithm = "hmacsha1"
        if case .current(let algorithm) = mode { signAlgorithm = algorithm.name }
        signPrefix = Array("POST\n\(target.canonicalHost)\n\(RegistrationPath.current)\n\n\(signAlgorithm)\n".utf8)
        let key = SymmetricKey(data: Array(productSecret.utf8))
        hmacSHA256 = HMAC<SHA256>(key: key)
        hmacSHA1 = HMAC<Insecure.SHA1>(key: key)
        random = WyRand()
    }

    /// What `prepare` leaves in the scratch buffers, for clients that take headers and a body.
    struct Prepared {
        var isPost: Bool
        var headers: [(String, String)]
        var body: [UInt8]
    }

    /// Builds the request for device `index` into the scratch buffers.
    mutating func prepare(index: Int, timestamp now: Int64) -> Prepared {
        switch mode {
        case .health:
            return Prepared(isPost: false, headers: [], body: [])
        case .current(let algorithm):
            sign(index: index, timestamp: now, nonce: random.nonce())
            return Prepared(
                isPost: true,
                headers: [
                    ("Content-Type", "application/json; charset=utf-8"), ("X-TC-Algorithm", algorithm.name),
                    ("X-TC-Timestamp", string(timestamp)), ("X-TC-Nonce", string(nonce)),
                    ("X-TC-Signature", string(signature)),
                ],
                body: body)
        case .legacy:
            sign(index: index, timestamp: now, nonce: random.nonce())
            return Prepared(isPost: true, headers: [("Content-Type", "application/json")], body: body)
        }
    }

    /// Writes the whole HTTP/1.1 request for device `index`.
    mutating func write(index: Int, timestamp now: Int64, into buffer: inout ByteBuffer) {
        switch mode {
        case .health:
            buffer.writeBytes(head)
        case .current:
            sign(index: index, timestamp: now, nonce: random.nonce())
            buffer.writeBytes(head)
            buffer.writeStaticString("X-TC-Timestamp: ")
            buffer.writeBytes(timestamp)
            buffer.writeStaticString("\r\nX-TC-Nonce: ")
            buffer.writeBytes(nonce)
            buffer.writeStaticString("\r\nX-TC-Signature: ")
            buffer.writeBytes(signature)
            buffer.writeStaticString("\r\nContent-Length: ")
            buffer.writeString(String(body.count))
            buffer.writeStaticString("\r\n\r\n")
            buffer.writeBytes(body)
        case .legacy:
            sign(index: index, timestamp: now, nonce: random.nonce())
            buffer.writeBytes(head)
            buffer.writeStaticString("Content-Length: ")
            buffer.writeString(String(body.count))
            buffer.writeStaticString("\r\n\r\n")
            buffer.writeBytes(body)
        }
    }

    /// Fills `name`, `timestamp`, `nonce`, `body` and `signature` (for legacy, `body` then holds the signature).
    private mutating func sign(index: Int, timestamp now: Int64, nonce value: UInt32) {
        name.removeAll(keepingCapacity: true)
        name += namePrefix
        name += String(index).utf8
        timestamp.removeAll(keepingCapacity: true)
        timestamp += String(now).utf8
        nonce.removeAll(keepingCapacity: true)
        nonce += String(value).utf8
        toSign.removeAll(keepingCapacity: true)
        signature.removeAll(keepingCapacity: true)
        body.removeAll(keepingCapacity: true)
        switch mode {
        case .health:
            return
        case .current(let algorithm):
            body += bodyPrefix
            body += name
            if index < csrs.count {
                body += #"","Csr":""#.utf8
                body += csrs[index]
            }
            body += #""}"#.utf8
            toSign += signPrefix
            toSign += timestamp
            toSign.append(0x0A)
            toSign += nonce
            toSign.append(0x0A)
            if algorithm == .hmacSHA1 {
                Self.appendHex(Insecure.SHA1.hash(data: body), to: &toSign)
                var mac = hmacSHA1!
                mac.update(data: toSign)
                Self.appendBase64(mac.finalize(), to: &signature)
            } else {
                Self.appendHex(SHA256.hash(data: body), to: &toSign)
                var mac = hmacSHA256!
                mac.update(data: toSign)
                Self.appendBase64(mac.finalize(), to: &signature)
            }
        case .legacy:
            toSign += "deviceName=".utf8
            toSign += name
            toSign += "&nonce=".utf8
            toSign += nonce
            toSign += "&productId=".utf8
            toSign += productId
            toSign += "&timestamp=".utf8
            toSign += timestamp
            var mac = hmacSHA1!
            mac.update(data: toSign)
            var hex: [UInt8] = []
            hex.reserveCapacity(40)
            Self.appendHex(mac.finalize(), to: &hex)
            Self.appendBase64(hex, to: &signature)
            body += #"{"deviceName":""#.utf8
            body += name
            body += #"","nonce":"#.utf8
            body += nonce
            body += #","productId":""#.utf8
            body += productId
            body += #"","timestamp":"#.utf8
            body += timestamp
            body += #","signature":""#.utf8
            body += signature
            body += #""}"#.utf8
        }
    }

    /// Signs one request here and with DynRegProtocol's signer: the fast path must not drift from the protocol.
    func selfCheck(productSecret: String) throws {
        var factory = self
        let now = Int64(time(nil))
        let index = csrs.isEmpty ? 7 : 0
        factory.sign(index: index, timestamp: now, nonce: 4242)
        let expected: String
        switch mode {
        case .health:
            return
        case .current(let algorithm):
            expected = SignedRequest(
                canonicalHost: CanonicalHost.fromHostHeader(hostHeader), algorithm: algorithm,
                timestamp: String(now), nonce: "4242", body: factory.body
            ).signature(productSecret: productSecret)
            let csr = csrs.isEmpty
                ? nil : String(decoding: csrs[index], as: UTF8.self).replacingOccurrences(of: "\\n", with: "\n")
            guard factory.body == RegistrationRequestBody(
                productId: String(decoding: productId, as: UTF8.self),
                deviceName: String(decoding: factory.name, as: UTF8.self), csr: csr
            ).encodedJSON() else { throw CLIError("internal error: the benchmark's request body differs") }
        case .legacy:
            let signed = LegacySignedRequest(
                productId: String(decoding: productId, as: UTF8.self),
                deviceName: String(decoding: factory.name, as: UTF8.self), timestamp: now, nonce: 4242)
            expected = signed.signature(productSecret: productSecret)
            let library = LegacyRegistrationRequestBody(signed: signed, signature: expected).encodedJSON()
            guard factory.body == library else {
                throw CLIError("internal error: the benchmark's legacy body differs")
            }
        }
        guard factory.signature == Array(expected.utf8) else {
            throw CLIError("internal error: the benchmark's signature differs from DynRegProtocol's")
        }
    }

    private func string(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)
    private static let base64Digits: [UInt8] = Array(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    private static func appendHex(_ bytes: some Sequence<UInt8>, to out: inout [UInt8]) {
        for byte in bytes {
            out.append(hexDigits[Int(byte >> 4)])
            out.append(hexDigits[Int(byte & 0x0F)])
        }
    }

    private static func appendBase64(_ bytes: some ContiguousBytes, to out: inout [UInt8]) {
        bytes.withUnsafeBytes { raw in
            var index = 0
            while index + 3 <= raw.count {
                let chunk = UInt32(raw[index]) << 16 | UInt32(raw[index + 1]) << 8 | UInt32(raw[index + 2])
                out.append(base64Digits[Int(chunk >> 18)])
                out.append(base64Digits[Int(chunk >> 12 & 0x3F)])
                out.append(base64Digits[Int(chunk >> 6 & 0x3F)])
                out.append(base64Digits[Int(chunk & 0x3F)])
                index += 3
            }
            let rest = raw.count - index
            if rest > 0 {
                let chunk = UInt32(raw[index]) << 16 | (rest == 2 ? UInt32(raw[index + 1]) << 8 : 0)
                out.append(base64Digits[Int(chunk >> 18)])
                out.append(base64Digits[Int(chunk >> 12 & 0x3F)])
                out.append(rest == 2 ? base64Digits[Int(chunk >> 6 & 0x3F)] : UInt8(ascii: "="))
                out.append(UInt8(ascii: "="))
            }
        }
    }
}

/// A fast non-cryptographic generator: nonces only need to differ, and the system generator costs a syscall.
struct WyRand: Sendable {
    private var state: UInt64

    init() { state = UInt64.random(in: .min ... .max) }

    mutating func next() -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }

    /// 0 … 2^31−1, the range the SDKs send.
    mutating func nonce() -> UInt32 { UInt32(truncatingIfNeeded: next() >> 33) }
}

// MARK: - Counting

/// Shared by every connection: which device comes next and how many are done.
final class BenchCounters: Sendable {
    let total: Int
    private let nextIndex = ManagedAtomic<Int>(0)
    let completed = ManagedAtomic<Int>(0)

    init(total: Int) { self.total = total }

    /// Claims the next device index, or `nil` when all are claimed.
    func claim() -> Int? {
        let index = nextIndex.loadThenWrappingIncrement(ordering: .relaxed)
        return index < total ? index : nil
    }
}

/// Latencies in microseconds and outcome counts.
struct BenchTally: Sendable {
    var histogram: Histogram<UInt64>
    var successes = 0
    var failures: [String: Int] = [:]
    var firstTransportError: String?

    init(timeout: Int) {
        histogram = Histogram(highestTrackableValue: UInt64(timeout + 60) * 1_000_000, numberOfSignificantValueDigits: .three)
    }

    mutating func record(outcome: String?, micros: Int64) {
        _ = histogram.record(UInt64(max(1, micros)))
        if let outcome { failures[outcome, default: 0] += 1 } else { successes += 1 }
    }

    mutating func recordTransportError(_ description: String) {
        failures["TransportError", default: 0] += 1
        if firstTransportError == nil { firstTransportError = description }
    }

    mutating func add(_ other: BenchTally) {
        histogram.add(other.histogram)
        successes += other.successes
        failures.merge(other.failures, uniquingKeysWith: +)
        if firstTransportError == nil { firstTransportError = other.firstTransportError }
    }

    var outcomes: [String: Int] {
        var all = failures
        if successes > 0 { all["Success"] = successes }
        return all
    }

    /// Success first, then by count.
    var sortedOutcomes: [(String, Int)] {
        let rest = failures.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }
        return (successes > 0 ? [("Success", successes)] : []) + rest.map { ($0.key, $0.value) }
    }

    func millis(_ percentile: Double) -> Double {
        histogram.totalCount == 0 ? 0 : Double(histogram.valueAtPercentile(percentile)) / 1000
    }

    var maxMillis: Double { histogram.totalCount == 0 ? 0 : Double(histogram.max) / 1000 }
}

struct BenchResult {
    var tally: BenchTally
    var durationSeconds: Double
    /// Every outcome counts, transport errors included.
    var requestsPerSecond: Double {
        Double(tally.successes + tally.failures.values.reduce(0, +)) / max(durationSeconds, 1e-9)
    }
    var firstTransportError: String? { tally.firstTransportError }
}

// MARK: - The NIO client

/// What one event loop's connections share; touched only on that loop, hence no locks.
final class LoopState: @unchecked Sendable {
    let loop: any EventLoop
    var factory: RequestFactory
    var tally: BenchTally
    let timeout: Int

    init(loop: any EventLoop, factory: RequestFactory, timeout: Int) {
        self.loop = loop
        self.factory = factory
        self.timeout = timeout
        tally = BenchTally(timeout: timeout)
    }
}

/// One connection slot: sends a request, waits for the whole answer, sends the next; reconnects when the server
/// closes. Every claimed index ends as exactly one outcome. Confined to `state.loop`.
final class BenchWorker: @unchecked Sendable {
    let state: LoopState
    let counters: BenchCounters
    let address: SocketAddress
    let finished: EventLoopPromise<Void>
    private var channel: (any Channel)?
    private var inFlight: Int?
    private var sentAt: NIODeadline = .uptimeNanoseconds(0)
    private var inbound: ByteBuffer?
    private var lastError: String?
    private var watchdog: RepeatedTask?

    init(state: LoopState, counters: BenchCounters, address: SocketAddress) {
        self.state = state
        self.counters = counters
        self.address = address
        finished = state.loop.makePromise()
    }

    func start() {
        let limit = TimeAmount.seconds(Int64(state.timeout))
        watchdog = state.loop.scheduleRepeatedTask(initialDelay: .seconds(1), delay: .seconds(1)) { [self] _ in
            if inFlight != nil, NIODeadline.now() - sentAt > limit {
                lastError = "no answer within \(state.timeout) s"
                channel?.close(promise: nil)
            }
        }
        connect()
    }

    private func connect() {
        guard let index = counters.claim() else {
            watchdog?.cancel()
            finished.succeed(())
            return
        }
        // Sent once the channel is active; a failed connect never becomes active.
        inFlight = index
        sentAt = .now()
        ClientBootstrap(group: state.loop)
            .channelOption(ChannelOptions.socketOption(.tcp_nodelay), value: 1)
            .connectTimeout(.seconds(Int64(state.timeout)))
            .channelInitializer { [self] channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHandler(BenchHandler(worker: self))
                }
            }
            .connect(to: address)
            .whenFailure { [self] error in
                if let index = inFlight {
                    inFlight = nil
                    fail(index, "\(error)")
                }
                // Through the loop, so that a refusing server cannot grow the stack.
                state.loop.execute { self.connect() }
            }
    }

    fileprivate func active(_ channel: any Channel) {
        self.channel = channel
        if let index = inFlight { send(index, on: channel) }
    }

    private func send(_ index: Int, on channel: any Channel) {
        var buffer = channel.allocator.buffer(capacity: 512)
        state.factory.write(index: index, timestamp: Int64(time(nil)), into: &buffer)
        inFlight = index
        sentAt = .now()
        channel.writeAndFlush(buffer, promise: nil)
    }

    private func fail(_ index: Int, _ description: String) {
        state.tally.recordTransportError(description)
        counters.completed.wrappingIncrement(ordering: .relaxed)
    }

    fileprivate func received(_ buffer: ByteBuffer, on channel: any Channel) {
        if inbound == nil {
            inbound = buffer
        } else {
            var more = buffer
            inbound!.writeBuffer(&more)
        }
        guard inFlight != nil else {
            lastError = "an answer nobody asked for"
            channel.close(promise: nil)
            return
        }
        let mode = state.factory.mode
        let parsed: HTTPResponseScan.Result = inbound!.withUnsafeReadableBytes { bytes in
            HTTPResponseScan.scan(bytes) { status, body in mode.classify(status: status, body: body) }
        }
        switch parsed {
        case .incomplete:
            return
        case .invalid(let reason):
            lastError = reason
            channel.close(promise: nil)
        case .complete(let outcome, let consumed, let close):
            inFlight = nil
            state.tally.record(outcome: outcome, micros: (NIODeadline.now() - sentAt).nanoseconds / 1000)
            counters.completed.wrappingIncrement(ordering: .relaxed)
            inbound!.moveReaderIndex(forwardBy: consumed)
            if inbound!.readableBytes == 0 { inbound = nil }
            if close {
                channel.close(promise: nil)
            } else if let next = counters.claim() {
                send(next, on: channel)
            } else {
                // All claimed: connect() will find nothing more and finish.
                channel.close(promise: nil)
            }
        }
    }

    fileprivate func errorCaught(_ error: any Error) {
        if lastError == nil { lastError = "\(error)" }
    }

    fileprivate func closed() {
        channel = nil
        inbound = nil
        if let index = inFlight {
            inFlight = nil
            fail(index, lastError ?? "the server closed the connection")
        }
        lastError = nil
        state.loop.execute { self.connect() }
    }
}

private final class BenchHandler: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    let worker: BenchWorker

    init(worker: BenchWorker) { self.worker = worker }

    func channelActive(context: ChannelHandlerContext) {
        worker.active(context.channel)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        worker.received(unwrapInboundIn(data), on: context.channel)
    }

    func channelInactive(context: ChannelHandlerContext) {
        worker.closed()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        worker.errorCaught(error)
        context.close(promise: nil)
    }
}

/// A minimal HTTP/1.1 response reader: status, Content-Length or chunked body, `Connection: close`.
enum HTTPResponseScan {
    enum Result {
        case incomplete
        case invalid(String)
        /// `outcome` as the classifier returned it; `consumed` bytes make up the response.
        case complete(outcome: String?, consumed: Int, close: Bool)
    }

    static func scan(
        _ bytes: UnsafeRawBufferPointer, classify: (Int, UnsafeRawBufferPointer) -> String?
    ) -> Result {
        guard let headerEnd = find(crlfcrlf: bytes) else {
            return bytes.count > 64 * 1024 ? .invalid("response headers over 64 KiB") : .incomplete
        }
        // "HTTP/1.1 200 OK"
        guard headerEnd >= 12, bytes[0] == UInt8(ascii: "H"), bytes[8] == UInt8(ascii: " "),
            let status = threeDigits(bytes, at: 9)
        else { return .invalid("not an HTTP/1.1 response") }
        var contentLength: Int?
        var chunked = false
        var close = false
        var lineStart = lineEnd(bytes, from: 0) + 2
        while lineStart < headerEnd {
            let end = lineEnd(bytes, from: lineStart)
            if let colon = (lineStart..<end).first(where: { bytes[$0] == UInt8(ascii: ":") }) {
                var valueStart = colon + 1
                while valueStart < end, bytes[valueStart] == UInt8(ascii: " ") { valueStart += 1 }
                let value = UnsafeRawBufferPointer(rebasing: bytes[valueStart..<end])
                if nameIs("content-length", bytes, lineStart, colon) {
                    guard !value.isEmpty, value.allSatisfy({ $0 >= 48 && $0 <= 57 }), value.count < 10 else {
                        return .invalid("bad Content-Length")
                    }
                    contentLength = value.reduce(0) { $0 * 10 + Int($1) - 48 }
                } else if nameIs("transfer-encoding", bytes, lineStart, colon) {
                    chunked = lowercased(value).contains("chunked")
                } else if nameIs("connection", bytes, lineStart, colon) {
                    close = lowercased(value).contains("close")
                }
            }
            lineStart = end + 2
        }
        let bodyStart = headerEnd + 4
        if status == 204 || status == 304 {
            let empty = UnsafeRawBufferPointer(rebasing: bytes[bodyStart..<bodyStart])
            return .complete(outcome: classify(status, empty), consumed: bodyStart, close: close)
        }
        if chunked {
            var body: [UInt8] = []
            var index = bodyStart
            while true {
                guard index < bytes.count else { return .incomplete }
                let end = lineEnd(bytes, from: index)
                guard end < bytes.count else { return .incomplete }
                var size = 0
                for position in index..<end {
                    guard let digit = hexValue(bytes[position]) else { break }
                    size = size * 16 + digit
                }
                index = end + 2
                if size == 0 {
                    // Trailers are not expected; the terminating empty line must be there.
                    guard index + 2 <= bytes.count else { return .incomplete }
                    let outcome = body.withUnsafeBytes { classify(status, $0) }
                    return .complete(outcome: outcome, consumed: index + 2, close: close)
                }
                guard index + size + 2 <= bytes.count else { return .incomplete }
                body += UnsafeRawBufferPointer(rebasing: bytes[index..<(index + size)])
                index += size + 2
            }
        }
        guard let length = contentLength else { return .invalid("response without Content-Length") }
        guard bytes.count >= bodyStart + length else { return .incomplete }
        let outcome = classify(status, UnsafeRawBufferPointer(rebasing: bytes[bodyStart..<(bodyStart + length)]))
        return .complete(outcome: outcome, consumed: bodyStart + length, close: close)
    }

    private static func find(crlfcrlf bytes: UnsafeRawBufferPointer) -> Int? {
        guard bytes.count >= 4 else { return nil }
        var index = 0
        while index <= bytes.count - 4 {
            if bytes[index] == 13, bytes[index + 1] == 10, bytes[index + 2] == 13, bytes[index + 3] == 10 {
                return index
            }
            index += 1
        }
        return nil
    }

    /// The index of the `\r` ending the line that starts at `start`, or `bytes.count`.
    private static func lineEnd(_ bytes: UnsafeRawBufferPointer, from start: Int) -> Int {
        var index = start
        while index + 1 < bytes.count, !(bytes[index] == 13 && bytes[index + 1] == 10) { index += 1 }
        return index + 1 < bytes.count ? index : bytes.count
    }

    private static func threeDigits(_ bytes: UnsafeRawBufferPointer, at index: Int) -> Int? {
        var value = 0
        for position in index..<(index + 3) {
            let byte = bytes[position]
            guard byte >= 48, byte <= 57 else { return nil }
            value = value * 10 + Int(byte - 48)
        }
        return value
    }

    private static func nameIs(_ name: StaticString, _ bytes: UnsafeRawBufferPointer, _ start: Int, _ end: Int) -> Bool {
        guard end - start == name.utf8CodeUnitCount else { return false }
        for offset in 0..<(end - start) where bytes[start + offset] | 0x20 != name.utf8Start[offset] {
            return false
        }
        return true
    }

    private static func lowercased(_ bytes: UnsafeRawBufferPointer) -> String {
        String(decoding: bytes, as: UTF8.self).lowercased()
    }

    private static func hexValue(_ byte: UInt8) -> Int? {
        switch byte {
        case 48...57: return Int(byte - 48)
        case 97...102: return Int(byte - 87)
        case 65...70: return Int(byte - 55)
        default: return nil
        }
    }
}

// MARK: - Progress

/// Progress on stderr: one redrawn line on a terminal, a plain line every 2 s otherwise.
struct BenchProgress {
    let counters: BenchCounters
    let interactive = isatty(STDERR_FILENO) == 1

    func run() async {
        let started = NIODeadline.now()
        var lastLine = started
        while !Task.isCancelled {
            do {
                try await Task.sleep(for: .milliseconds(interactive ? 100 : 250))
            } catch {
                break
            }
            let now = NIODeadline.now()
            if interactive {
                write("\r" + line(elapsed: now - started) + "\u{1B}[K")
            } else if now - lastLine >= .seconds(2) {
                lastLine = now
                write("dynreg bench: " + line(elapsed: now - started) + "\n")
            }
        }
        if interactive {
            write("\r" + line(elapsed: NIODeadline.now() - started) + "\u{1B}[K\n")
        }
    }

    private func line(elapsed: TimeAmount) -> String {
        let done = counters.completed.load(ordering: .relaxed)
        let total = counters.total
        let seconds = max(Double(elapsed.nanoseconds) / 1e9, 1e-3)
        let rate = Double(done) / seconds
        let fraction = Double(done) / Double(total)
        let eta = rate > 0 ? Int((Double(total - done) / rate).rounded(.up)) : 0
        var text = ""
        if interactive {
            let filled = Int(fraction * 30)
            text += "[" + String(repeating: "#", count: filled) + String(repeating: "-", count: 30 - filled) + "] "
        }
        text += "\(done)/\(total) (\(Int(fraction * 100))%)  \(Int(rate)) req/s  ETA \(eta / 60):"
            + (eta % 60 < 10 ? "0" : "") + "\(eta % 60)"
        return text
    }

    private func write(_ text: String) {
        FileHandle.standardError.write(Data(text.utf8))
    }
}
