import DynRegServer
import Foundation
import NIOHTTP1
import Testing

/// The console's security properties over loopback: cookie flags, CSRF refusal, the CSP and framing headers,
/// sign-out ending the session on the server, and a wrong token refused.
@Suite("Console security")
struct ConsoleSecurityTests {
    static let form = [("Content-Type", "application/x-www-form-urlencoded")]

    /// Signs in; the cookie header to send and the session's CSRF token from a page.
    func signIn(_ server: TestServer) async throws -> (cookie: String, csrf: String) {
        let client = try await ConsoleClient.signedIn(server)
        return (client.cookie, client.csrf)
    }

    @Test("the session cookie is HttpOnly, SameSite=Strict, path-bound and expires; no Secure over plain HTTP")
    func cookieFlags() async throws {
        try await TestServer.with { server in
            let answer = try await ConsoleClient.postSignIn(server, token: TestServer.adminToken)
            let setCookie = try #require(answer.headers["Set-Cookie"].first)
            #expect(setCookie.hasPrefix("dynreg_console="))
            // The sign-in form's CSRF cookie is spent.
            #expect(
                answer.headers["Set-Cookie"].contains {
                    $0.hasPrefix("dynreg_console_signin=;") && $0.contains("Max-Age=0")
                })
            for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console", "Max-Age="] {
                #expect(setCookie.contains(attribute), "\(attribute) missing from \(setCookie)")
            }
            #expect(!setCookie.contains("Secure"))
            #expect(answer.headers["Location"].first == "/console/")
        }
    }

    @Test("a wrong token is refused with no cookie, and pages without a session send the browser to sign in")
    func wrongToken() async throws {
        try await TestServer.with { server in
            let answer = try await ConsoleClient.postSignIn(server, token: "wrong")
            #expect(answer.status == 401)
            // Only a fresh sign-in form's CSRF cookie, no session.
            #expect(answer.headers["Set-Cookie"].allSatisfy { $0.hasPrefix("dynreg_console_signin=") })
            #expect(answer.text.contains("Wrong admin token"))
            let page = try await server.send(.GET, "/console/products", headers: [("Cookie", "dynreg_console=forged")])
            #expect(page.status == 303)
            #expect(page.headers["Location"].first == "/console/sign-in")
        }
    }

    @Test("a sign-in POST without the sign-in form's CSRF pair is refused before the token is looked at")
    func signInCSRF() async throws {
        try await TestServer.with { server in
            let (cookie, token) = try await ConsoleClient.signInForm(server)
            #expect(cookie.hasPrefix("dynreg_console_signin="))
            let page = try await server.send(.GET, "/console/sign-in")
            let setCookie = try #require(page.headers["Set-Cookie"].first)
            for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console/sign-in", "Max-Age="] {
                #expect(setCookie.contains(attribute), "\(attribute) missing from \(setCookie)")
            }
            let right = "token=\(TestServer.adminToken)"
            let forged = "dynreg_console_signin=forged"
            // No token, a wrong one, the cookie's value itself (a plain double-submit), no cookie, a made-up cookie.
            for (body, cookieHeader) in [
                (right, cookie), ("\(right)&csrf=wrong", cookie), ("\(right)&csrf=", cookie),
                ("\(right)&csrf=\(cookie.split(separator: "=")[1])", cookie), ("\(right)&csrf=\(token)", ""),
                ("\(right)&csrf=\(token)", forged), ("\(right)&csrf=forged", forged),
            ] {
                let headers = Self.form + (cookieHeader.isEmpty ? [] : [("Cookie", cookieHeader)])
                let answer = try await server.send(.POST, "/console/sign-in", headers: headers, body: Array(body.utf8))
                #expect(answer.status == 403, "\(body) with \(cookieHeader)")
                #expect(answer.text.contains("did not come from this console"))
                #expect(!answer.headers["Set-Cookie"].contains { $0.hasPrefix("dynreg_console=") })
            }
            // Refused forms count no wrong tokens: twelve more, then the right pair still signs in.
            for _ in 0..<12 {
                _ = try await server.send(
                    .POST, "/console/sign-in", headers: Self.form + [("Cookie", cookie)],
                    body: Array("token=wrong".utf8))
            }
            let signed = try await server.send(
                .POST, "/console/sign-in", headers: Self.form + [("Cookie", cookie)],
                body: Array("\(right)&csrf=\(token)".utf8))
            #expect(signed.status == 303)
            #expect(signed.headers["Set-Cookie"].contains { $0.hasPrefix("dynreg_console=") })
        }
    }

    @Test("every answer carries a CSP without inline scripts, X-Frame-Options DENY and nosniff")
    func headers() async throws {
        try await TestServer.with { server in
            let (cookie, _) = try await signIn(server)
            for path in [
                "/console/sign-in", "/console/", "/console/products", "/console/events", "/console/products/NOPE",
                "/console/no/such/page",
            ] {
                let answer = try await server.send(.GET, path, headers: [("Cookie", cookie)])
                let csp = try #require(answer.headers["Content-Security-Policy"].first, "\(path)")
                #expect(csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"))
                #expect(csp.contains("frame-ancestors 'none'"))
                #expect(answer.headers["X-Frame-Options"].first == "DENY")
                #expect(answer.headers["X-Content-Type-Options"].first == "nosniff")
                #expect(!answer.text.contains("<script>") && !answer.text.contains(" style="))
                #expect(!answer.text.contains("onclick="))
            }
        }
    }

    @Test("a POST without the CSRF token, or with a wrong one, is refused and changes nothing")
    func csrf() async throws {
        try await TestServer.with { server in
            let (cookie, csrf) = try await signIn(server)
            let headers = Self.form + [("Cookie", cookie)]
            for body in ["name=evil", "name=evil&csrf=wrong", "name=evil&csrf="] {
                let answer = try await server.send(.POST, "/console/products", headers: headers, body: Array(body.utf8))
                #expect(answer.status == 403, "\(body)")
            }
            #expect((try await server.admin(.GET, "/products").json["products"] as? [Any])?.isEmpty == true)
            let created = try await server.send(
                .POST, "/console/products", headers: headers, body: Array("name=fine&csrf=\(csrf)".utf8))
            #expect(created.status == 303)
            #expect((try await server.admin(.GET, "/products").json["products"] as? [Any])?.count == 1)
        }
    }

    @Test("sign-out ends the session on the server: the old cookie opens nothing")
    func signOut() async throws {
        try await TestServer.with { server in
            let (cookie, csrf) = try await signIn(server)
            let out = try await server.send(
                .POST, "/console/sign-out", headers: Self.form + [("Cookie", cookie)], body: Array("csrf=\(csrf)".utf8))
            #expect(out.status == 303)
            let page = try await server.send(.GET, "/console/products", headers: [("Cookie", cookie)])
            #expect(page.status == 303)
            let post = try await server.send(
                .POST, "/console/products", headers: Self.form + [("Cookie", cookie)],
                body: Array("name=x&csrf=\(csrf)".utf8))
            #expect(post.status == 403)
        }
    }

    @Test("odd device names are escaped in the pages, and bad console input answers 4xx, never 500")
    func escaping() async throws {
        try await TestServer.with { server in
            let (cookie, csrf) = try await signIn(server)
            let headers = Self.form + [("Cookie", cookie)]
            let created = try await server.send(
                .POST, "/console/products", headers: headers,
                body: Array("name=%3Cscript%3Ex%3C%2Fscript%3E&csrf=\(csrf)&deviceQuota=12".utf8))
            let location = try #require(created.headers["Location"].first)
            let page = try await server.send(.GET, location, headers: [("Cookie", cookie)])
            #expect(!page.text.contains("<script>x"))
            #expect(page.text.contains("&lt;script&gt;x"))
            let productPath = String(location)
            for (path, body) in [
                ("/console/products", "csrf=\(csrf)&deviceQuota=-3&name=a"),
                ("\(productPath)/devices", "csrf=\(csrf)&names=%3Cb%3E%0A%00%FF%0Aok-1"),
                ("/console/products/NOPE/delete", "csrf=\(csrf)&confirm=yes"),
                ("/console/products", "csrf=\(csrf)&name=%E0%80"),
            ] {
                let answer = try await server.send(.POST, path, headers: headers, body: Array(body.utf8))
                #expect(answer.status < 500, "\(path) \(body): \(answer.status)")
                #expect(!answer.text.contains("<b>"))
            }
        }
    }
}
