import DynRegTestSupport
import Foundation
import Testing

@Suite("Graceful shutdown")
struct ShutdownTests {
    @Test("after SIGTERM, a request body that never finishes holds the process for the grace period, not for ever")
    func graceEnds() async throws {
        let token = String(repeating: "t", count: 40)
        let server = try await ServerProcess.start(
            arguments: ["--no-demo", "--shutdown-grace", "1", "--request-timeout", "300"],
            environment: ["DYNREG_ADMIN_TOKEN": token, "DYNREG_BROKER_TOKEN": token])
        let port = server.port
        let stuck = Task {
            try? await RawConnection.exchange(
                port: port, Array("POST /device/register HTTP/1.1\r\nHost: a\r\nContent-Length: 1000\r\n\r\n{".utf8),
                timeout: .seconds(120))
        }
        try await Task.sleep(for: .milliseconds(500))
        server.signal(SIGTERM)
        // The grace (1 s), then at most the cancellation bound (5 s); far less than the client would hold it.
        let exited = await server.waitForExit(within: .seconds(40))
        #expect(exited, "still running 40 s after SIGTERM with a stuck request")
        if !exited { await server.kill() }
        let exchange = await stuck.value
        #expect(exchange?.closedByServer ?? true, "the stuck connection was closed")
    }
}
