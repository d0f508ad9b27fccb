import DynRegCA
package import DynRegStore
import Foundation
import Logging
import ServiceLifecycle

/// Tells the CRL publisher that some product's revocations changed (a revocation, a re-registration that revoked
/// the previous certificate, a reset, a deletion). Bursts coalesce into one rewrite.
package final class RevocationNotifier: Sendable {
    let changes: AsyncStream<Void>
    private let continuation: AsyncStream<Void>.Continuation

    package init() {
        (changes, continuation) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(1))
    }

    package func changed() { continuation.yield() }
}

/// Keeps, in one directory, every certificate product's CA and CRL for brokers that check client certificates
/// themselves (Mosquitto): `<productId>.ca.pem`, `<productId>.crl.pem`, and `ca-bundle.pem` and `crl-bundle.pem`
/// holding all of them (Mosquitto needs one CRL file that covers every CA it trusts).
///
/// Rewritten once the server listens (migrations done), after every change the notifier reports, and every `refresh` (CRLs are valid 7 days).
/// Each file is written to a temporary file and renamed: Mosquitto accepts revoked certificates after a SIGHUP
/// that finds its CRL file missing or empty. After each rewrite `command` runs (`sh -c`), e.g. `kill -HUP <pid>`.
package struct CRLPublisher<Store: RegistrationStore>: Service {
    let store: Store
    let authorities: CertificateAuthorities
    let directory: URL
    let command: String?
    let refresh: Duration
    let notifier: RevocationNotifier
    let logger: Logger

    package func run() async throws {
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { [notifier, refresh] in
                while true {
                    try await Task.sleep(for: refresh)
                    notifier.changed()
                }
            }
            // The first change is the server's start (buildApplication signals it once migrations are done).
            for await _ in notifier.changes.cancelOnGracefulShutdown() {
                await publishLogging()
            }
            group.cancelAll()
        }
    }

    private func publishLogging() async {
        do {
            try await publish(now: Date())
        } catch {
            logger.error("could not write the CRL directory", metadata: ["dynreg.error": "\(error)"])
            return
        }
        if let command { await Self.run(command, logger: logger) }
    }

    /// Writes every file once.
    func publish(now: Date) async throws {
        var cas: [String] = []
        var crls: [String] = []
        for product in try await store.products() where product.authType == .certificate {
            guard let authority = try authorities.authority(for: product) else { continue }
            let revoked = try await store.revokedCertificates(productId: product.id)
            let crl = try await authorities.crl(for: product, revoked: revoked, now: now)
            try Self.write(
                authority.certificatePEM + "\n", to: directory.appendingPathComponent("\(product.id).ca.pem"))
            try Self.write(crl + "\n", to: directory.appendingPathComponent("\(product.id).crl.pem"))
            cas.append(authority.certificatePEM)
            crls.append(crl)
        }
        // The CRLs before the CA bundle: a broker that rereads both never trusts a CA without its CRL.
        try Self.write(crls.map { $0 + "\n" }.joined(), to: directory.appendingPathComponent("crl-bundle.pem"))
        try Self.write(cas.map { $0 + "\n" }.joined(), to: directory.appendingPathComponent("ca-bundle.pem"))
    }

    /// A temporary file in the same directory, then a rename: a reader sees the old file or the new, whole.
    static func write(_ text: String, to url: URL) throws {
        let temporary = url.deletingLastPathComponent().appendingPathComponent(".\(url.lastPathComponent).tmp")
        try Data(text.utf8).write(to: temporary)
        guard rename(temporary.path, url.path) == 0 else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: url.path])
        }
    }

    static func run(_ command: String, logger: Logger) async {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/bin/sh")
        process.arguments = ["-c", command]
        let status: Int32 = await withCheckedContinuation { continuation in
            process.terminationHandler = { continuation.resume(returning: $0.terminationStatus) }
            do {
                try process.run()
            } catch {
                process.terminationHandler = nil
                continuation.resume(returning: -1)
            }
        }
        if status != 0 {
            logger.warning("--crl-updated-command failed", metadata: ["dynreg.status": "\(status)"])
        }
    }
}
