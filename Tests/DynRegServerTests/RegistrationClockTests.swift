import DynRegCA
import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import Logging
import Testing

@testable import DynRegServer

/// The registration service reads time only from the clock it is given, so the timestamp window can be tested at
/// its edges without waiting or changing the machine's clock.
@Suite("Registration clock")
struct RegistrationClockTests {
    static let then: Int64 = 1_600_000_000

    func result(timestamp: Int64, nonce: Int64) async throws -> RegistrationResult {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "dynreg-clock-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let store = try SQLiteStore(
            path: directory.appendingPathComponent("dynreg.sqlite").path, masterKey: LiveServer.masterKey)
        return try await withRunning(store) {
            let product = try await store.createProduct(DemoProduct.make())
            let service = RegistrationService(
                store: store, timestampWindow: 300, publicHosts: [],
                authorities: CertificateAuthorities(masterKey: LiveServer.masterKey),
                clock: { Date(timeIntervalSince1970: TimeInterval(Self.then)) })
            let signed = SignedRequest(
                registering: RegistrationRequestBody(productId: product.id, deviceName: "clock-1"),
                canonicalHost: "127.0.0.1", algorithm: .hmacSHA256, timestamp: timestamp, nonce: nonce)
            let headers = Dictionary(signed.headers(productSecret: product.secret), uniquingKeysWith: { $1 })
            let input = CurrentRegistrationInput(
                hostHeader: "127.0.0.1", algorithm: headers[DeviceRequestHeader.algorithm],
                timestamp: headers[DeviceRequestHeader.timestamp], nonce: headers[DeviceRequestHeader.nonce],
                signature: headers[DeviceRequestHeader.signature], body: signed.body)
            return await service.register(input, remoteAddress: "127.0.0.1", logger: Logger(label: "dynreg-test"))
        }
    }

    @Test("a timestamp at either edge of the window around the injected clock is accepted", arguments: [-300, 0, 300])
    func insideTheWindow(offset: Int64) async throws {
        let answer = try await result(timestamp: Self.then + offset, nonce: 7)
        guard case .issued = answer else {
            Issue.record("expected a credential, got \(answer)")
            return
        }
    }

    @Test(
        "one second past either edge is SignatureExpire, and the machine's own time is far outside",
        arguments: [
            Int64(-301), 301, Int64(Date().timeIntervalSince1970) - then,
        ])
    func outsideTheWindow(offset: Int64) async throws {
        let answer = try await result(timestamp: Self.then + offset, nonce: 7)
        guard case .refused(let code, _) = answer else {
            Issue.record("expected a refusal, got \(answer)")
            return
        }
        #expect(code == .signatureExpire)
    }
}
