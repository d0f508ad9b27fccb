import Crypto
import DynRegProtocol
import Foundation
import Synchronization

/// One signed-in browser: its CSRF token, when it started and was last seen, and a message for its next page.
struct ConsoleSession: Sendable, Hashable {
    let csrfToken: String
    let createdAt: Date
    var lastSeen: Date
    /// Shown once, on the next page (after a redirect).
    var flash: String?

    /// Whether `presented` is this session's CSRF token, compared in constant time.
    func acceptsCSRF(_ presented: String?) -> Bool {
        guard let presented else { return false }
        return constantTimeEquals(Array(presented.utf8), Array(csrfToken.utf8))
    }
}

/// The console's sessions, kept in memory by the server (a restart signs everyone out). The cookie holds a random
/// 256-bit value; the table is keyed by its SHA-256, so the lookup's timing says nothing about valid values.
/// Sessions end after `idleTimeout` without a request, after `lifetime` in any case, and at sign-out. At most
/// `capacity` live at once: a new one pushes out the one seen least recently. Only a client that presented the
/// admin token creates one.
final class ConsoleSessions: Sendable {
    struct Policy: Sendable, Hashable {
        var capacity = 64
        var idleTimeout: TimeInterval = 2 * 3600
        var lifetime: TimeInterval = 12 * 3600
    }

    let policy: Policy
    private let table: Mutex<[String: ConsoleSession]> = Mutex([:])
    /// Signs the sign-in form's tokens; only this process knows it, so a restart voids open sign-in forms.
    private let signInKey = SymmetricKey(size: .bits256)

    init(policy: Policy = Policy()) { self.policy = policy }

    var count: Int { table.withLock { $0.count } }

    /// A new session and the cookie value that names it.
    func create(now: Date = Date()) -> (cookie: String, session: ConsoleSession) {
        let cookie = Secrets.adminToken()
        let session = ConsoleSession(csrfToken: Secrets.adminToken(), createdAt: now, lastSeen: now, flash: nil)
        table.withLock { sessions in
            sessions = sessions.filter { isLive($0.value, now: now) }
            while sessions.count >= policy.capacity,
                let oldest = sessions.min(by: { $0.value.lastSeen < $1.value.lastSeen })
            {
                sessions[oldest.key] = nil
            }
            sessions[Self.key(cookie)] = session
        }
        return (cookie, session)
    }

    /// The live session the cookie names, marked as seen now; `nil` for an unknown or expired one.
    func session(cookie: String?, now: Date = Date()) -> ConsoleSession? {
        guard let cookie, !cookie.isEmpty, cookie.utf8.count <= 128 else { return nil }
        let key = Self.key(cookie)
        return table.withLock { sessions in
            guard var session = sessions[key] else { return nil }
            guard isLive(session, now: now) else {
                sessions[key] = nil
                return nil
            }
            session.lastSeen = now
            sessions[key] = session
            return session
        }
    }

    /// Ends the session (sign-out); the cookie is worthless from now on.
    func end(cookie: String?) {
        guard let cookie else { return }
        table.withLock { $0[Self.key(cookie)] = nil }
    }

    func setFlash(_ message: String, cookie: String) {
        table.withLock { $0[Self.key(cookie)]?.flash = message }
    }

    /// The flash message, removed.
    func takeFlash(cookie: String) -> String? {
        table.withLock { sessions in
            let key = Self.key(cookie)
            defer { sessions[key]?.flash = nil }
            return sessions[key]?.flash
        }
    }

    /// The sign-in form's CSRF pair, before any session exists: a random value for a cookie, and its HMAC for
    /// the form. A page that can set cookies for this host still cannot make a pair that matches (a plain
    /// double-submit, cookie equal to field, would accept one), and a page elsewhere can read neither.
    func signInChallenge() -> (cookie: String, token: String) {
        let cookie = Secrets.adminToken()
        return (cookie, signInToken(cookie))
    }

    /// Whether `token` is the sign-in form's token for the challenge cookie, compared in constant time.
    func acceptsSignIn(cookie: String?, token: String?) -> Bool {
        guard let cookie, let token, !cookie.isEmpty, cookie.utf8.count <= 128 else { return false }
        return constantTimeEquals(Array(token.utf8), Array(signInToken(cookie).utf8))
    }

    private func signInToken(_ cookie: String) -> String {
        Hex.lowercase(
            HMAC<SHA256>.authenticationCode(for: Array("dynreg console sign-in \(cookie)".utf8), using: signInKey))
    }

    private func isLive(_ session: ConsoleSession, now: Date) -> Bool {
        now.timeIntervalSince(session.lastSeen) < policy.idleTimeout
            && now.timeIntervalSince(session.createdAt) < policy.lifetime
    }

    private static func key(_ cookie: String) -> String {
        Hex.lowercase(SHA256.hash(data: Array(cookie.utf8)))
    }
}
