package import DynRegProtocol
import Foundation

/// Where requests go: connect to host:port, name `hostHeader` in `Host`, sign for `canonicalHost`.
package struct LoadTarget: Sendable, Hashable {
    package var host: String
    package var port: Int
    package var hostHeader: String
    package var canonicalHost: String
    /// The URL's path without a trailing `/` or a registration path, prepended to each request's path.
    package var pathPrefix: String

    /// `nil` unless `string` is an `http://` URL with a host: the generator does not speak TLS.
    package init?(url string: String) {
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
        while path.hasSuffix("/") { path.removeLast() }
        for known in [
            RegistrationPath.current, RegistrationPath.legacy, LoadMode.healthPath, LoadMode.livezPath,
            LoadMode.authPath,
        ]
        where path.hasSuffix(known) {
            path.removeLast(known.count)
        }
        while path.hasSuffix("/") { path.removeLast() }
        pathPrefix = path
    }
}

/// What every request of a run is.
package enum LoadMode: Sendable, Hashable {
    case current(SignatureAlgorithm)
    case legacy
    case health
    /// `GET /livez`, which touches nothing: the server's HTTP ceiling.
    case livez
    /// Broker logins: `POST /device/auth` with each device's MQTT credentials.
    case auth

    package static let healthPath = "/health"
    package static let livezPath = "/livez"

    /// A `GET` without a body rather than a signed `POST`.
    package var isProbe: Bool { self == .health || self == .livez }
    package static let authPath = "/device/auth"

    /// The endpoint's path, without the target's prefix.
    package var endpoint: String {
        switch self {
        case .health: return Self.healthPath
        case .livez: return Self.livezPath
        case .current: return RegistrationPath.current
        case .legacy: return RegistrationPath.legacy
        case .auth: return Self.authPath
        }
    }

    /// The outcome of one answer, reading only as much of the body as that takes: `nil` is success.
    package func outcome(status: Int, body: UnsafeRawBufferPointer) -> String? {
        guard status == 200 else { return "HTTP \(status)" }
        switch self {
        case .health, .livez: return nil
        case .current: return JSONOutcomeScanner.currentOutcome(body)
        case .legacy: return JSONOutcomeScanner.legacyOutcome(body)
        case .auth: return JSONOutcomeScanner.authOutcome(body)
        }
    }
}
