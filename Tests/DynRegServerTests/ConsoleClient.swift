import Foundation
import NIOHTTP1
import Testing

/// A browser's part in the console tests: the sign-in form's CSRF pair, the session cookie, forms posted with the
/// session's CSRF token. Real HTTP against a `TestServer`.
struct ConsoleClient {
    static let form = [("Content-Type", "application/x-www-form-urlencoded")]

    let server: TestServer
    var cookie = ""
    var csrf = ""

    init(_ server: TestServer) { self.server = server }

    /// The sign-in page's challenge cookie (`name=value`) and the token in its form.
    static func signInForm(_ server: TestServer) async throws -> (cookie: String, token: String) {
        let page = try await server.send(.GET, "/console/sign-in")
        #expect(page.status == 200)
        let setCookie = try #require(page.headers["Set-Cookie"].first)
        let cookie = String(try #require(setCookie.split(separator: ";").first))
        return (cookie, try #require(field("csrf", in: page.text)))
    }

    /// The answer to a sign-in POST with the sign-in form's CSRF pair.
    static func postSignIn(_ server: TestServer, token adminToken: String) async throws -> TestServer.Answer {
        let (cookie, token) = try await signInForm(server)
        return try await server.send(
            .POST, "/console/sign-in", headers: form + [("Cookie", cookie)],
            body: Array("csrf=\(token)&token=\(adminToken)".utf8))
    }

    /// Signs in with the admin token and reads the session's CSRF token from a page.
    static func signedIn(_ server: TestServer) async throws -> ConsoleClient {
        let answer = try await postSignIn(server, token: TestServer.adminToken)
        #expect(answer.status == 303)
        let setCookie = try #require(answer.headers["Set-Cookie"].first { $0.hasPrefix("dynreg_console=") })
        var client = ConsoleClient(server)
        client.cookie = String(try #require(setCookie.split(separator: ";").first))
        let page = try await client.get("/console/products")
        #expect(page.status == 200)
        client.csrf = try #require(field("csrf", in: page.text))
        return client
    }

    func get(_ path: String) async throws -> TestServer.Answer {
        try await server.send(.GET, path, headers: [("Cookie", cookie)])
    }

    /// Posts `fields` form-encoded, with the session's CSRF token first.
    func post(_ path: String, _ fields: [(String, String)]) async throws -> TestServer.Answer {
        let body = ([("csrf", csrf)] + fields).map { "\($0.0)=\(Self.encoded($0.1))" }.joined(separator: "&")
        return try await server.send(.POST, path, headers: Self.form + [("Cookie", cookie)], body: Array(body.utf8))
    }

    static func encoded(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
            ?? text
    }

    /// The value of the first input named `name` in `html`, entities of the templates' escaping undone.
    static func field(_ name: String, in html: String) -> String? {
        guard let named = html.range(of: "name=\"\(name)\"") else { return nil }
        let tag = html[named.upperBound...].prefix { $0 != ">" }
        guard let start = tag.range(of: "value=\"")?.upperBound else { return nil }
        return unescaped(String(tag[start...].prefix { $0 != "\"" }))
    }

    /// The text of the textarea with id `id`.
    static func textarea(_ id: String, in html: String) -> String? {
        guard let open = html.range(of: "id=\"\(id)\""), let start = html[open.upperBound...].range(of: ">"),
            let end = html[start.upperBound...].range(of: "</textarea>")
        else { return nil }
        return unescaped(String(html[start.upperBound..<end.lowerBound]))
    }

    static func unescaped(_ text: String) -> String {
        text.replacingOccurrences(of: "&quot;", with: "\"").replacingOccurrences(of: "&#39;", with: "'")
            .replacingOccurrences(of: "&lt;", with: "<").replacingOccurrences(of: "&gt;", with: ">")
            .replacingOccurrences(of: "&#x2F;", with: "/").replacingOccurrences(of: "&amp;", with: "&")
    }
}
