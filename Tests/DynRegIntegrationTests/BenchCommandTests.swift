import DynRegTestSupport
import Foundation
import Testing

/// The `--json` report of `dynreg bench`.
private struct BenchReport {
    var outcomes: [String: Int]
    var devices: Int
    var concurrency: Int
    var object: [String: Any]

    init(_ result: CommandOutput) throws {
        #expect(result.status == 0, "\(result.stderr)")
        let line = try #require(result.stdout.split(separator: "\n").last.map(String.init), "no output")
        object = try #require(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        outcomes = try #require(object["outcomes"] as? [String: Int])
        devices = try #require(object["devices"] as? Int)
        concurrency = try #require(object["concurrency"] as? Int)
    }
}

@Suite("dynreg bench", .serialized)
struct BenchCommandTests {
    /// The load comes from one address, wrong secrets included: the limits would count it.
    private func withServer(_ body: (RunningServer) async throws -> Void) async throws {
        try await RunningServer.with(arguments: ["--no-demo"] + TwoInstanceTests.unlimited, body)
    }

    /// `dynreg bench --url … --product-id … --product-secret … --devices N --concurrency C EXTRA --json`.
    private func bench(
        _ server: RunningServer, _ product: (id: String, secret: String), secret: String? = nil, devices: Int,
        concurrency: Int, _ extra: [String] = [], environment: [String: String?] = [:]
    ) async throws -> BenchReport {
        try BenchReport(
            await runDynreg(
                [
                    "bench", "--url", server.baseURL, "--product-id", product.id, "--product-secret",
                    secret ?? product.secret, "--devices", "\(devices)", "--concurrency", "\(concurrency)",
                ] + extra + ["--json"], environment: environment))
    }

    @Test("registers N distinct devices, current and legacy protocol, and reports every outcome")
    func registers() async throws {
        try await withServer { server in
            let product = try await server.createProduct()
            let current = try await BenchReport(
                runDynreg(
                    [
                        "bench", "--url", server.baseURL, "--product-id", product.id, "--devices", "50",
                        "--concurrency", "8", "--json",
                    ],
                    environment: ["DYNREG_PRODUCT_SECRET": product.secret]))
            #expect(current.outcomes == ["Success": 50])
            #expect(current.devices == 50)
            #expect(current.concurrency == 8)
            for key in ["requestsPerSecond", "p50Ms", "p90Ms", "p99Ms", "maxMs", "durationSeconds"] {
                #expect(current.object[key] is Double || current.object[key] is Int, "\(key)")
            }

            let legacy = try await bench(server, product, devices: 50, concurrency: 8, ["--legacy"])
            #expect(legacy.outcomes == ["Success": 50])

            let sha1 = try await bench(
                server, product, devices: 50, concurrency: 8, ["--algorithm", "hmacsha1", "--device-prefix", "sha1"])
            #expect(sha1.outcomes == ["Success": 50])

            // Three runs of 50 distinct names each.
            let shown = try await server.admin("GET", "/products/\(product.id)")
            #expect(shown["deviceCount"] as? Int == 150)
            let device = try await server.admin("GET", "/products/\(product.id)/devices/sha1-49")
            #expect(device["deviceName"] as? String == "sha1-49")
        }
    }

    @Test("--csr: every device sends its own certificate signing request and gets a certificate for it")
    func signingRequests() async throws {
        try await withServer { server in
            let product = try await server.createProduct(#"{"name":"bench-cert","authType":"certificate"}"#)
            let result = try await runDynreg(
                [
                    "bench", "--url", server.baseURL, "--product-id", product.id, "--devices", "20", "--concurrency",
                    "4",
                    "--csr", "--device-prefix", "csr", "--json",
                ],
                environment: ["DYNREG_PRODUCT_SECRET": product.secret])
            let report = try BenchReport(result)
            #expect(report.outcomes == ["Success": 20])
            #expect((report.object["endpoint"] as? String)?.contains("CSR") == true)
            #expect(result.stderr.contains("certificate signing requests"))
            for name in ["csr-0", "csr-19"] {
                let listing = try await server.admin("GET", "/products/\(product.id)/devices/\(name)/certificates")
                let certificates = try #require(listing["certificates"] as? [[String: Any]], "\(listing)")
                #expect(certificates.count == 1)
            }
            let refused = try await runDynreg(
                ["bench", "--url", server.baseURL, "--product-id", product.id, "--csr", "--legacy"],
                environment: ["DYNREG_PRODUCT_SECRET": product.secret])
            #expect(refused.status != 0)
            #expect(refused.stderr.contains("--csr needs the current protocol"))
        }
    }

    @Test("a wrong secret: every request is AuthFailure.SignatureFailure, and the exit status is still 0")
    func wrongSecret() async throws {
        try await withServer { server in
            let product = try await server.createProduct()
            let wrong = "wrong-secret-0123456789abcdef"
            let current = try await bench(server, product, secret: wrong, devices: 50, concurrency: 8)
            #expect(current.outcomes == ["AuthFailure.SignatureFailure": 50])
            let legacy = try await bench(server, product, secret: wrong, devices: 50, concurrency: 8, ["--legacy"])
            #expect(legacy.outcomes == ["AuthFailure.SignatureFailure": 50])
        }
    }

    @Test("--auth registers the devices, then logs each in through /device/auth: allow is Success")
    func auth() async throws {
        try await withServer { server in
            let product = try await server.createProduct()
            let report = try await bench(
                server, product, devices: 40, concurrency: 8, ["--auth"],
                environment: ["DYNREG_BROKER_TOKEN": RunningServer.brokerToken])
            #expect(report.outcomes == ["Success": 40])
            let wrong = try await bench(
                server, product, devices: 10, concurrency: 4, ["--auth", "--broker-token", "wrong"])
            #expect(wrong.outcomes == ["HTTP 401": 10])
        }
    }

    @Test("--health sends N requests to GET /health; the human report names the outcomes")
    func health() async throws {
        try await withServer { server in
            let report = try await BenchReport(
                runDynreg(
                    ["bench", "--url", server.baseURL, "--health", "--devices", "50", "--concurrency", "8", "--json"]))
            #expect(report.outcomes == ["Success": 50])
            #expect(report.devices == 50)

            let human = try await runDynreg(
                ["bench", "--url", server.baseURL, "--health", "--devices", "20", "--concurrency", "30"])
            #expect(human.status == 0, "\(human.stderr)")
            #expect(human.stdout.contains("throughput"))
            #expect(human.stdout.contains("p99"))
            #expect(human.stdout.contains("Success"))
            #expect(human.stdout.contains("20"))
        }
    }

    @Test("--livez sends N requests to GET /livez; --server-pid adds the server's CPU time per request")
    func livez() async throws {
        try await withServer { server in
            let measured = try await BenchReport(
                runDynreg([
                    "bench", "--url", server.baseURL, "--livez", "--devices", "400", "--concurrency", "4",
                    "--server-pid", String(server.process.processIdentifier), "--json",
                ]))
            #expect(measured.outcomes == ["Success": 400])
            let cpu = try #require(measured.object["serverCPUMicrosPerRequest"] as? Double)
            #expect(cpu >= 0)
            let unmeasured = try await BenchReport(
                runDynreg(["bench", "--url", server.baseURL, "--livez", "--devices", "10", "--json"]))
            #expect(unmeasured.outcomes == ["Success": 10])
            #expect(unmeasured.object["serverCPUMicrosPerRequest"] is NSNull)

            let human = try await runDynreg([
                "bench", "--url", server.baseURL, "--livez", "--devices", "20",
                "--server-pid", String(server.process.processIdentifier),
            ])
            #expect(human.status == 0, "\(human.stderr)")
            #expect(human.stdout.contains("server CPU"), "\(human.stdout)")
        }
    }

    @Test("a server that is not there: one line on stderr, non-zero exit")
    func unreachable() async throws {
        // Port 9 (discard) on loopback: nothing listens there in a test environment.
        let result = try await runDynreg(
            ["bench", "--url", "http://127.0.0.1:9", "--health", "--devices", "5", "--concurrency", "2"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("cannot connect"))
        #expect(result.stderr.split(separator: "\n").count == 1)
    }

    @Test(
        "bad input: one line on stderr, non-zero exit",
        arguments: [
            ["--product-id", "P1", "--devices", "0"],
            ["--product-id", "P1", "--concurrency", "0"],
            ["--product-id", "P1", "--product-secret", "short"],
            ["--product-id", "P1"],
            ["--product-id", "bad id!"],
            ["--product-id", "P1", "--device-prefix", "bad/prefix"],
            ["--product-id", "P1", "--legacy", "--algorithm", "hmacsha256"],
            ["--livez", "--server-pid", "2147483646"],
        ])
    func badInput(extra: [String]) async throws {
        let result = try await runDynreg(
            ["bench", "--url", "http://127.0.0.1:9"] + extra, environment: ["DYNREG_PRODUCT_SECRET": ""])
        #expect(result.status != 0)
        #expect(result.stderr.split(separator: "\n").count == 1, "\(result.stderr)")
        #expect(result.stdout.isEmpty)
    }

    @Test("https is refused with a clear message")
    func httpsRefused() async throws {
        let result = try await runDynreg(
            ["bench", "--url", "https://127.0.0.1:9", "--health"])
        #expect(result.status != 0)
        #expect(result.stderr.contains("http://"))
    }
}
