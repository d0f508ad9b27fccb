import Foundation
import HTTPTypes
import Hummingbird

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// An address block such as `10.0.0.0/8` or `fd00::/8` (`--trusted-proxy`).
package struct AddressBlock: Sendable, Hashable {
    private let network: [UInt8]
    private let prefixLength: Int

    /// `nil` when `text` is not an IPv4 or IPv6 address with an optional `/prefix`.
    package init?(_ text: String) {
        let parts = text.split(separator: "/", maxSplits: 1, omittingEmptySubsequences: false)
        guard let bytes = Self.bytes(String(parts[0])) else { return nil }
        let length = parts.count == 2 ? Int(parts[1]) : bytes.count * 8
        guard let length, (0...(bytes.count * 8)).contains(length) else { return nil }
        network = bytes
        prefixLength = length
    }

    package func contains(_ address: String) -> Bool {
        guard let bytes = Self.bytes(address), bytes.count == network.count else { return false }
        var remaining = prefixLength
        for (have, want) in zip(bytes, network) where remaining > 0 {
            let bits = min(8, remaining)
            let mask = UInt8(truncatingIfNeeded: 0xFF << (8 - bits))
            if have & mask != want & mask { return false }
            remaining -= bits
        }
        return true
    }

    /// The 4 or 16 bytes of an address in text.
    static func bytes(_ text: String) -> [UInt8]? {
        var buffer = [UInt8](repeating: 0, count: 16)
        if inet_pton(AF_INET, text, &buffer) == 1 { return Array(buffer.prefix(4)) }
        if inet_pton(AF_INET6, text, &buffer) == 1 { return buffer }
        return nil
    }
}

/// Behind trusted proxies, the client is the last address in `X-Forwarded-For` that is not a trusted proxy
/// itself; from anywhere else the header is ignored, so nobody can choose the address they are limited by.
struct ClientAddressMiddleware: RouterMiddleware {
    typealias Context = DynRegRequestContext
    let trusted: [AddressBlock]

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let peer = context.remoteAddress?.ipAddress, trusted.contains(where: { $0.contains(peer) }) else {
            return try await next(request, context)
        }
        let hops = request.headers[values: .xForwardedFor].flatMap { $0.split(separator: ",") }
            .map { $0.trimmingCharacters(in: .whitespaces) }
        var context = context
        for hop in hops.reversed() {
            guard AddressBlock.bytes(hop) != nil else { break }  // malformed: stop at the last good hop
            context.clientAddress = hop
            if !trusted.contains(where: { $0.contains(hop) }) { break }
        }
        return try await next(request, context)
    }
}

extension HTTPField.Name {
    static let xForwardedFor = Self("X-Forwarded-For")!
}
