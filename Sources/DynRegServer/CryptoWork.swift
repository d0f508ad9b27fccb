import NIOPosix

/// Cryptography that takes milliseconds (an RSA key, a CRL signature) runs on NIO's blocking pool, not on the
/// cooperative threads that answer every other request: a burst of RSA registrations then slows only itself.
enum CryptoWork {
    static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
    }
}
