import AsyncHTTPClient
import DynRegProtocol
import Foundation
import NIOCore
import NIOHTTP1

/// The preparation of `dynreg bench --auth`: register the devices, keep their psks, and turn them into the JSON
/// body a broker sends to `POST /device/auth` for each (MQTT credentials valid for a day).
enum AuthBench {
    static func loginBodies(
        url: String, productId: String, productSecret: String, devicePrefix: String, count: Int, concurrency: Int,
        note: @escaping @Sendable (String) -> Void
    ) async throws -> [[UInt8]] {
        let base = url.hasSuffix("/") ? String(url.dropLast()) : url
        let host = URLComponents(string: base)?.host ?? "127.0.0.1"
        let expiry = Int64(Date().timeIntervalSince1970) + 86_400
        note("registering \(count) devices for their psks")
        let started = ContinuousClock.now
        var bodies = [[UInt8]](repeating: [], count: count)
        try await withThrowingTaskGroup(of: (Int, [UInt8]).self) { group in
            var next = 0
            func add() {
                let index = next
                next += 1
                group.addTask {
                    let device = "\(devicePrefix)-\(index)"
                    let psk = try await register(
                        base, host: host, productId: productId, secret: productSecret, device: device)
                    let credentials = try MQTTCredentials.derive(
                        productId: productId, deviceName: device, psk: psk, expiry: expiry)
                    let body = try JSONEncoder().encode([
                        "clientid": credentials.clientId, "username": credentials.username,
                        "password": credentials.password,
                    ])
                    return (index, Array(body))
                }
            }
            for _ in 0..<min(concurrency, count) { add() }
            var done = 0
            var lastNote = ContinuousClock.now
            while let (index, body) = try await group.next() {
                bodies[index] = body
                done += 1
                if next < count { add() }
                if ContinuousClock.now - lastNote > .seconds(2) {
                    note("registered \(done)/\(count)")
                    lastNote = .now
                }
            }
        }
        note("registered \(count) devices in \(ContinuousClock.now - started)")
        return bodies
    }

    private static func register(
        _ base: String, host: String, productId: String, secret: String, device: String
    ) async throws -> String {
        let signed = SignedRequest(
            registering: RegistrationRequestBody(productId: productId, deviceName: device), canonicalHost: host,
            algorithm: .hmacSHA256, timestamp: Int64(Date().timeIntervalSince1970),
            nonce: Int64.random(in: 1...Int64(Int32.max)))
        var request = HTTPClientRequest(url: base + RegistrationPath.current)
        request.method = .POST
        request.headers.add(contentsOf: signed.headers(productSecret: secret))
        request.headers.add(name: "Connection", value: "keep-alive")
        request.body = .bytes(ByteBuffer(bytes: signed.body))
        let response = try await HTTPClient.shared.execute(request, timeout: .seconds(30))
        let body = try await response.body.collect(upTo: 1 << 16)
        switch try RegistrationReply(decoding: Array(buffer: body)) {
        case .failure(let code, let message, _):
            throw CLIError("registering \(device) failed: \(code): \(message)")
        case .success(let payload, _, _):
            let plaintext = try PayloadCipher.decrypt(
                payload: payload.payload, length: payload.length, productSecret: secret)
            guard case .key(let psk) = try DeviceCredential(decoding: plaintext) else {
                throw CLIError("--auth needs a key product: \(device) got a certificate")
            }
            return psk
        }
    }
}
