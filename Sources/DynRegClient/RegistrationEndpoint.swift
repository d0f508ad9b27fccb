import DynRegProtocol
public import Foundation

/// Which of the two device endpoints a registrar speaks.
///
/// A struct rather than an enum so that a later protocol can be added without breaking callers.
public struct RegistrationProtocol: Sendable, Hashable, CustomStringConvertible {
    /// The path appended to a base URL.
    public let path: String

    private init(path: String) { self.path = path }

    /// `POST /device/register`: signed `X-TC-*` headers, JSON answer under `Response`. The default.
    public static let current = RegistrationProtocol(path: RegistrationPath.current)
    /// `POST /register/dev`: the signature travels in the JSON body and is always HMAC-SHA1.
    /// For platforms and gateways that only know the older protocol.
    public static let legacy = RegistrationProtocol(path: RegistrationPath.legacy)

    /// The path, e.g. `/device/register`.
    public var description: String { path }
}

/// Where a registrar sends its requests.
///
/// Give a base URL such as `https://iot.example.com:8443` (or one with a path prefix, `https://example.com/iot`)
/// and the registrar appends `/device/register` or `/register/dev` according to its ``RegistrationProtocol``.
/// A URL whose path already ends in one of those two paths is used as given.
public struct RegistrationEndpoint: Sendable, Hashable, CustomStringConvertible {
    /// The URL as configured.
    public let url: URL

    /// An endpoint at a URL; ``DeviceRegistrar`` refuses one that is not `http` or `https` with a host.
    public init(url: URL) {
        self.url = url
    }

    /// An endpoint from a URL string, or `nil` unless it is an `http` or `https` URL with a host.
    public init?(string: String) {
        guard let url = URL(string: string), Self.isUsable(url) else { return nil }
        self.url = url
    }

    /// The URL as configured.
    public var description: String { url.absoluteString }

    /// The URL a request of the given protocol goes to.
    public func url(for registrationProtocol: RegistrationProtocol) -> URL {
        let path = url.path
        if path.hasSuffix(RegistrationPath.current) || path.hasSuffix(RegistrationPath.legacy) {
            return url
        }
        guard var components = URLComponents(url: url, resolvingAgainstBaseURL: false) else { return url }
        var prefix = components.percentEncodedPath
        while prefix.hasSuffix("/") { prefix.removeLast() }
        components.percentEncodedPath = prefix + registrationProtocol.path
        return components.url ?? url
    }

    /// The host the request is signed for: the URL's host without its port, as the SDKs sign `url.host`.
    /// IPv6 literals keep their brackets, matching the `Host` header a server compares against.
    var canonicalHost: String? {
        guard let host = URLComponents(url: url, resolvingAgainstBaseURL: false)?.host, !host.isEmpty else {
            return nil
        }
        if host.contains(":"), !host.hasPrefix("[") { return "[" + host + "]" }
        return host
    }

    static func isUsable(_ url: URL) -> Bool {
        guard let scheme = url.scheme?.lowercased(), scheme == "http" || scheme == "https" else { return false }
        return RegistrationEndpoint(url: url).canonicalHost != nil
    }

    // Tencent Cloud IoT public gateways.

    /// Tencent Cloud IoT, Guangzhou (China): `https://ap-guangzhou.gateway.tencentdevices.com`.
    public static let tencentGuangzhou = tencent("ap-guangzhou")
    /// Tencent Cloud IoT, Shanghai (China): `https://ap-shanghai.gateway.tencentdevices.com`.
    public static let tencentShanghai = tencent("ap-shanghai")
    /// Tencent Cloud IoT, Beijing (China): `https://ap-beijing.gateway.tencentdevices.com`.
    public static let tencentBeijing = tencent("ap-beijing")
    /// Tencent Cloud IoT, Silicon Valley (USA): `https://na-siliconvalley.gateway.tencentdevices.com`.
    public static let tencentSiliconValley = tencent("na-siliconvalley")
    /// Tencent Cloud IoT, Frankfurt (Germany): `https://eu-frankfurt.gateway.tencentdevices.com`.
    public static let tencentFrankfurt = tencent("eu-frankfurt")

    private static func tencent(_ region: String) -> RegistrationEndpoint {
        RegistrationEndpoint(url: URL(string: "https://\(region).gateway.tencentdevices.com")!)
    }
}
