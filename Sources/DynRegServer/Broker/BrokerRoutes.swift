import DynRegProtocol
import DynRegStore
import Foundation
import HTTPTypes
import Hummingbird
import NIOCore

/// What brokers call: EMQX's HTTP authentication (`POST /device/auth`) and authorization (`POST /device/acl`),
/// and RabbitMQ's HTTP auth backend (`POST /rabbitmq/user`, `vhost`, `resource`, `topic`). Every one of them
/// requires the broker token (docs/brokers.md).
struct BrokerRoutes<Store: RegistrationStore>: Sendable {
    typealias Context = DynRegRequestContext

    let service: BrokerService<Store>
    let token: String
    let maxBodySize: Int
    let emqxAnswers = EMQXAnswers()
    var metrics: ServerMetrics { service.metrics }

    func register(on router: Router<Context>) {
        let group = router.group()
        group.add(middleware: BrokerTokenMiddleware(token: token, metrics: metrics))
        route("/device/auth", emqxAuthentication, on: group)
        route("/device/acl", emqxAuthorization, on: group)
        route("/rabbitmq/user", rabbitUser, on: group)
        route("/rabbitmq/vhost", rabbitVhost, on: group)
        route("/rabbitmq/resource", rabbitResource, on: group)
        route("/rabbitmq/topic", rabbitTopic, on: group)
    }

    /// A broker endpoint whose every answer is counted by path and result.
    private func route(
        _ path: String, _ handler: @escaping @Sendable (Request, Context) async -> Answer,
        on group: RouterGroup<Context>
    ) {
        group.post(RouterPath(path)) { [metrics] request, context -> Response in
            let answer = await handler(request, context)
            metrics.brokerAnswer(endpoint: path, result: answer.allowed ? "allow" : "deny")
            return answer.response
        }
    }

    /// A broker's answer and whether it lets the device in or on.
    struct Answer: Sendable {
        var allowed: Bool
        var response: Response
    }

    // MARK: EMQX

    /// EMQX 5 HTTP authentication: `result`, and for a device it lets in, `is_superuser`, `expire_at` and the
    /// device's topic rules as `acl`, ending in a deny of everything else.
    @Sendable func emqxAuthentication(_ request: Request, _ context: Context) async -> Answer {
        guard let body = try? await request.body.collect(upTo: maxBodySize),
            let auth = EMQXAuthentication.decode(Array(body.readableBytesView))
        else { return Self.emqxResult(allowed: false) }
        let login: BrokerService<Store>.Login?
        if auth.certificate != nil || auth.fingerprint != nil {
            login = await service.certificateLogin(
                clientId: auth.clientid, certificatePEM: auth.certificate, fingerprint: auth.fingerprint,
                logger: context.logger)
        } else {
            login = await service.passwordLogin(
                clientId: auth.clientid, username: auth.username ?? "", password: auth.password ?? "",
                logger: context.logger)
        }
        guard let login else { return Self.emqxResult(allowed: false) }
        let answer = emqxAnswers.allow(
            productId: login.product.id, policy: login.product.topicPolicy, deviceName: login.deviceName,
            expireAt: login.expiresAt)
        return Answer(allowed: true, response: .json(status: .ok, bytes: answer))
    }

    /// EMQX 5 HTTP authorization: one topic, one action.
    @Sendable func emqxAuthorization(_ request: Request, _ context: Context) async -> Answer {
        guard let body = try? await request.body.collect(upTo: maxBodySize),
            let check = EMQXAuthorization.decode(Array(body.readableBytesView)),
            let action = TopicAction(rawValue: check.action)
        else { return Self.emqxResult(allowed: false) }
        // The username, when sent, must name the same client: a device's credentials are its own.
        if let username = check.username, let parsed = MQTTUsername(username), parsed.clientId != check.clientid {
            return Self.emqxResult(allowed: false)
        }
        let allowed = await service.allows(action, check.topic, clientId: check.clientid)
        return Self.emqxResult(allowed: allowed)
    }

    // MARK: RabbitMQ

    /// `username` and `password`. A key device logs in with its MQTT credentials; a certificate device that the
    /// broker verified (`ssl_cert_login`) arrives as its common name with no `password` field at all (an empty
    /// password is a password login, and refused).
    @Sendable func rabbitUser(_ request: Request, _ context: Context) async -> Answer {
        guard let form = await Self.form(request, limit: maxBodySize), let username = form["username"],
            // RabbitMQ turns `/` into `.` and back: a device name with a `.` would get its messages on other
            // topics. Product ids have no `.`, so the client id tells; refused before a login could activate it.
            !Self.clientId(username).contains(".")
        else { return Self.deny }
        let login: BrokerService<Store>.Login?
        if let password = form["password"] {
            login =
                password.isEmpty
                ? nil
                : await service.passwordLogin(
                    clientId: form["client_id"], username: username, password: password, logger: context.logger)
        } else {
            login = await service.certificateHolderLogin(clientId: username, logger: context.logger)
        }
        return login == nil ? Self.deny : Self.allow
    }

    /// `username`, `vhost`, `ip` (and `client_id` where the broker sends it, which must be the username's).
    @Sendable func rabbitVhost(_ request: Request, _ context: Context) async -> Answer {
        guard let form = await Self.form(request, limit: maxBodySize), let username = form["username"] else {
            return Self.deny
        }
        let clientId = Self.clientId(username)
        if let sent = form["client_id"] ?? form["variable_map.client_id"], sent != clientId { return Self.deny }
        guard (try? await service.device(clientId: clientId)) != nil else { return Self.deny }
        return Self.allow
    }

    /// Only the device's own subscription queues and the `amq.topic` exchange.
    @Sendable func rabbitResource(_ request: Request, _ context: Context) async -> Answer {
        guard let form = await Self.form(request, limit: maxBodySize), let username = form["username"],
            let resource = form["resource"], let name = form["name"]
        else { return Self.deny }
        let clientId = Self.clientId(username)
        switch resource {
        case "exchange":
            return name == "amq.topic" && form["permission"] != "configure" ? Self.allow : Self.deny
        case "queue":
            let own = ["mqtt-subscription-\(clientId)qos0", "mqtt-subscription-\(clientId)qos1"]
            return own.contains(name) ? Self.allow : Self.deny
        default:
            return Self.deny
        }
    }

    /// A routing key (`/` as `.`, `+` as `*`): `write` publishes, `read` subscribes.
    @Sendable func rabbitTopic(_ request: Request, _ context: Context) async -> Answer {
        guard let form = await Self.form(request, limit: maxBodySize), let username = form["username"],
            form["resource"] == "topic", form["name"] == "amq.topic", let key = form["routing_key"]
        else { return Self.deny }
        let action: TopicAction
        switch form["permission"] {
        case "write": action = .publish
        case "read": action = .subscribe
        default: return Self.deny
        }
        let allowed = await service.allows(action, key, clientId: Self.clientId(username), separator: ".")
        return allowed ? Self.allow : Self.deny
    }

    /// A Tencent MQTT username starts with the client id; a certificate login's username is the client id.
    static func clientId(_ username: String) -> String {
        String(username.prefix { $0 != ";" })
    }

    /// RabbitMQ reads exactly `allow` or `deny`: anything more (a newline) breaks the connection.
    static var allow: Answer { Answer(allowed: true, response: .text("allow")) }
    static var deny: Answer { Answer(allowed: false, response: .text("deny")) }

    /// A form-encoded body; `nil` when it is too large or not a form.
    static func form(_ request: Request, limit: Int) async -> [String: String]? {
        var request = request
        guard let body = try? await request.collectBody(upTo: limit) else { return nil }
        let text = String(decoding: body.readableBytesView, as: UTF8.self).replacingOccurrences(of: "+", with: "%20")
        guard let items = URLComponents(string: "?" + text)?.queryItems else { return nil }
        var fields: [String: String] = [:]
        for item in items where fields[item.name] == nil { fields[item.name] = item.value ?? "" }
        return fields
    }

    static func emqxResult(allowed: Bool) -> Answer {
        Answer(allowed: allowed, response: .json(status: .ok, allowed ? #"{"result":"allow"}"# : #"{"result":"deny"}"#))
    }
}

/// EMQX's authentication request, as the configuration in docs/brokers.md sends it.
struct EMQXAuthentication: Decodable, Equatable {
    var clientid: String
    var username: String?
    var password: String?
    /// The peer certificate EMQX verified (`${cert_pem}`), or its SHA-256 fingerprint.
    var certificate: String?
    var fingerprint: String?

    /// Read on bytes when the body is a flat object of strings (``FlatJSONObject``), else by `JSONDecoder`.
    static func decode(_ body: [UInt8]) -> Self? {
        if let fields = emqxStrings(body), let clientid = fields["clientid"] {
            return Self(
                clientid: clientid, username: fields["username"], password: fields["password"],
                certificate: fields["certificate"], fingerprint: fields["fingerprint"])
        }
        return try? emqxDecoder.decode(Self.self, from: Data(body))
    }
}

struct EMQXAuthorization: Decodable, Equatable {
    var clientid: String
    var username: String?
    var topic: String
    var action: String

    /// As ``EMQXAuthentication/decode(_:)``.
    static func decode(_ body: [UInt8]) -> Self? {
        if let fields = emqxStrings(body), let clientid = fields["clientid"], let topic = fields["topic"],
            let action = fields["action"]
        {
            return Self(clientid: clientid, username: fields["username"], topic: topic, action: action)
        }
        return try? emqxDecoder.decode(Self.self, from: Data(body))
    }
}

/// The string fields of an EMQX body read on bytes (``FlatJSONObject``). `nil` when it is not a flat object, or a
/// field EMQX's requests define holds a number, a boolean or `null`: what that means (an absent optional, or an
/// error) is `JSONDecoder`'s to say.
private func emqxStrings(_ body: [UInt8]) -> [String: String]? {
    guard let fields = FlatJSONObject.fields(body) else { return nil }
    var strings: [String: String] = [:]
    for (key, value) in fields where emqxFields.contains(key) {
        guard let value else { return nil }
        strings[key] = value
    }
    return strings
}

private let emqxFields: Set<String> = [
    "clientid", "username", "password", "certificate", "fingerprint", "topic", "action",
]

/// One decoder for every EMQX request: making one per request costs more than the decoding.
private let emqxDecoder = JSONDecoder()

/// `Authorization: Bearer <token>`, or HTTP Basic with the token as the password (RabbitMQ sends the credentials
/// written in its URLs that way). Compared in constant time; a refusal is 401 and is counted in the metrics
/// (`broker_token`), never logged per request.
struct BrokerTokenMiddleware: RouterMiddleware {
    typealias Context = DynRegRequestContext
    let token: TokenDigest
    let metrics: ServerMetrics

    init(token: String, metrics: ServerMetrics) {
        self.token = TokenDigest(token)
        self.metrics = metrics
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws -> Response {
        guard let presented = Self.presentedToken(request.headers[.authorization]), token.matches(presented) else {
            metrics.refusal(.brokerToken)
            return Response(
                status: .unauthorized,
                headers: [
                    .contentType: "text/plain; charset=utf-8", .wwwAuthenticate: #"Basic realm="dynreg broker""#,
                ],
                body: .init(byteBuffer: ByteBuffer(string: "the broker token is missing or wrong\n")))
        }
        return try await next(request, context)
    }

    static func presentedToken(_ header: String?) -> [UInt8]? {
        guard let header else { return nil }
        if header.hasPrefix("Bearer ") { return Array(header.dropFirst(7).utf8) }
        guard header.hasPrefix("Basic "), let decoded = Data(base64Encoded: String(header.dropFirst(6))),
            let colon = decoded.firstIndex(of: UInt8(ascii: ":"))
        else { return nil }
        return Array(decoded[decoded.index(after: colon)...])
    }
}

extension Response {
    static func text(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "text/plain"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
