import DynRegProtocol
import DynRegStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `/console/`: the operator console, server-rendered pages (swift-mustache templates, package resources) over
/// `ProductAdministration`. Signing in with the admin token makes a server-side session (``ConsoleSessions``);
/// every POST carries the session's CSRF token; destructive actions ask on a confirmation page first.
struct ConsoleRoutes<Store: RegistrationStore>: Sendable {
    typealias Context = DynRegRequestContext
    static var cookieName: String { "dynreg_console" }
    /// The sign-in form's CSRF cookie, before there is a session.
    static var signInCookieName: String { "dynreg_console_signin" }

    let administration: ProductAdministration<Store>
    let token: TokenDigest
    let throttle: AdminLoginThrottle
    let sessions: ConsoleSessions
    let assets: ConsoleAssets
    /// Adds `Secure` to the cookie: the server speaks HTTPS.
    let secureCookie: Bool

    func register(on group: RouterGroup<Context>) {
        group.add(middleware: ConsoleMiddleware(assets: assets))
        group.get("/", use: overview)
        group.get("/assets/{name}", use: asset)
        group.get("/sign-in", use: signInForm)
        group.post("/sign-in", use: signIn)
        group.post("/sign-out", use: signOut)
        group.get("/products", use: products)
        group.post("/products", use: createProduct)
        group.get("/products/{productId}", use: product)
        group.post("/products/{productId}", use: updateProduct)
        group.post("/products/{productId}/secret", use: showSecret)
        group.post("/products/{productId}/rotate-secret", use: rotateSecret)
        group.post("/products/{productId}/delete", use: deleteProduct)
        group.post("/products/{productId}/lockouts/clear", use: clearLockout)
        group.get("/products/{productId}/ca.pem", use: caCertificate)
        group.get("/products/{productId}/crl.pem", use: crl)
        group.get("/products/{productId}/devices", use: devices)
        group.post("/products/{productId}/devices", use: createDevices)
        group.get("/products/{productId}/devices/{deviceName}", use: device)
        group.post("/products/{productId}/devices/{deviceName}/reset", use: resetDevice)
        group.post("/products/{productId}/devices/{deviceName}/delete", use: deleteDevice)
        group.post("/products/{productId}/devices/{deviceName}/activate", use: activateDevice)
        group.post("/products/{productId}/certificates/{serial}/revoke", use: revokeCertificate)
        group.get("/events", use: events)
        // Anything else under /console answers a page with the same headers, not the router's bare 404.
        group.get("/**") { _, _ -> Response in throw ConsoleFailure(status: .notFound, message: "no such page") }
    }

    // MARK: Sessions

    private struct Signed {
        var cookie: String
        var session: ConsoleSession
    }

    private func cookie(_ request: Request) -> String? { request.cookies[Self.cookieName]?.value }

    /// The signed-in session, or a redirect to the sign-in page.
    private func signedIn(_ request: Request) throws -> Signed {
        let cookie = cookie(request)
        guard let cookie, let session = sessions.session(cookie: cookie) else {
            throw ConsoleRedirect(location: "/console/sign-in")
        }
        return Signed(cookie: cookie, session: session)
    }

    /// The form of a state-changing request from a signed-in browser with its CSRF token; 403 otherwise.
    private func checkedForm(_ request: Request, _ context: Context) async throws -> (Signed, FormFields) {
        guard let cookie = cookie(request), let session = sessions.session(cookie: cookie) else {
            throw ConsoleFailure(status: .forbidden, message: "not signed in, or the session has ended")
        }
        let form = try await formFields(request, context)
        guard session.acceptsCSRF(form["csrf"]) else {
            throw ConsoleFailure(
                status: .forbidden, message: "the form's CSRF token is missing or wrong; reload the page")
        }
        return (Signed(cookie: cookie, session: session), form)
    }

    private func formFields(_ request: Request, _ context: Context) async throws -> FormFields {
        guard let body = try? await request.body.collect(upTo: context.maxUploadSize) else {
            throw ConsoleFailure(status: .contentTooLarge, message: "the form is larger than 64 KiB")
        }
        return FormFields(Array(buffer: body))
    }

    private func page(
        _ template: String, _ title: String, section: String, _ signed: Signed, _ content: Any,
        refresh: Int? = nil, status: HTTPResponse.Status = .ok
    ) -> Response {
        let page = ConsolePage(
            title: title, section: section, signedIn: true, csrf: signed.session.csrfToken,
            flash: sessions.takeFlash(cookie: signed.cookie), error: nil, content: content, refresh: refresh)
        return assets.page(template, page, status: status)
    }

    private func redirect(_ location: String, flash: String, _ signed: Signed) -> ConsoleRedirect {
        sessions.setFlash(flash, cookie: signed.cookie)
        return ConsoleRedirect(location: location)
    }

    /// The confirmation page of a destructive action, unless the form says it was confirmed.
    private func confirmed(
        _ form: FormFields, _ signed: Signed, action: String, question: String, button: String,
        extra: [String: String] = [:]
    ) -> Response? {
        guard form["confirm"] != "yes" else { return nil }
        let fields = extra.map { ["name": $0.key, "value": $0.value] }
        return page(
            "confirm", "Confirm", section: "", signed,
            ["action": action, "question": question, "button": button, "fields": fields])
    }

    @Sendable func signInForm(_ request: Request, context: Context) async throws -> Response {
        if let cookie = cookie(request), sessions.session(cookie: cookie) != nil {
            throw ConsoleRedirect(location: "/console/")
        }
        return signInPage(error: nil, status: .ok)
    }

    /// The sign-in page, with a fresh CSRF pair: the challenge cookie (for the sign-in path only) and its token
    /// in the form.
    private func signInPage(error: String?, status: HTTPResponse.Status) -> Response {
        let (challenge, token) = sessions.signInChallenge()
        let page = ConsolePage(
            title: "Sign in", section: "", signedIn: false, csrf: token, flash: nil, error: error, content: [:])
        var response = assets.page("sign-in", page, status: status)
        response.headers[.setCookie] = signInCookie(challenge, maxAge: 3600)
        return response
    }

    private func signInCookie(_ value: String, maxAge: Int) -> String {
        "\(Self.signInCookieName)=\(value); Path=/console/sign-in; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
            + (secureCookie ? "; Secure" : "")
    }

    /// Refuses a sign-in form this console did not hand out (login CSRF: another site signing the browser in
    /// with a token of its choosing) before looking at the token, so such a POST also counts no failure.
    @Sendable func signIn(_ request: Request, context: Context) async throws -> Response {
        let address = context.remoteAddressText
        if throttle.lockRemaining(address) != nil {
            return signInPage(
                error: "Too many wrong tokens from this address; wait a minute.", status: .tooManyRequests)
        }
        let form = try await formFields(request, context)
        guard sessions.acceptsSignIn(cookie: request.cookies[Self.signInCookieName]?.value, token: form["csrf"])
        else {
            return signInPage(
                error: "The sign-in form had expired or did not come from this console; sign in again.",
                status: .forbidden)
        }
        guard let presented = form["token"], token.matches(Array(presented.utf8)) else {
            let verdict = throttle.recordFailure(address)
            if verdict.log {
                context.logger.warning("console sign-in with a wrong token", metadata: ["dynreg.remote": "\(address)"])
            }
            return signInPage(error: "Wrong admin token.", status: .unauthorized)
        }
        let (cookie, _) = sessions.create()
        var response = Response(status: .seeOther, headers: [.location: "/console/"])
        let maxAge = Int(sessions.policy.lifetime)
        response.headers.append(
            HTTPField(
                name: .setCookie,
                value: "\(Self.cookieName)=\(cookie); Path=/console; Max-Age=\(maxAge); HttpOnly; SameSite=Strict"
                    + (secureCookie ? "; Secure" : "")))
        response.headers.append(HTTPField(name: .setCookie, value: signInCookie("", maxAge: 0)))
        return response
    }

    @Sendable func signOut(_ request: Request, context: Context) async throws -> Response {
        let (signed, _) = try await checkedForm(request, context)
        sessions.end(cookie: signed.cookie)
        var response = Response(status: .seeOther, headers: [.location: "/console/sign-in"])
        response.headers[.setCookie] =
            "\(Self.cookieName)=; Path=/console; Max-Age=0; HttpOnly; SameSite=Strict"
            + (secureCookie ? "; Secure" : "")
        return response
    }

    @Sendable func asset(_ request: Request, context: Context) async throws -> Response {
        guard let file = assets.files[try context.parameters.require("name")] else {
            throw ConsoleFailure(status: .notFound, message: "no such file")
        }
        return Response(
            status: .ok, headers: [.contentType: file.contentType, .cacheControl: "max-age=300"],
            body: .init(byteBuffer: ByteBuffer(bytes: file.bytes)))
    }

    /// An operator's change, in the product's audit log as the admin API writes it, naming the console.
    private func audit(_ action: String, product: String, device: String = "", _ context: Context) async {
        await administration.recordAction(
            RegistrationEvent(
                time: Date(), productId: product, deviceName: device, outcome: action,
                remoteAddress: context.remoteAddressText, endpoint: "console, admin token \(token.fingerprint)"),
            logger: context.logger)
    }

    // MARK: Pages

    @Sendable func overview(_ request: Request, context: Context) async throws -> Response {
        let signed = try signedIn(request)
        let products = try await administration.products()
        // The last 60 clock minutes, the current one included: one store query over every product.
        let since = ConsoleOverview.chartStart(now: Date())
        let counts = try await administration.registrationsPerMinute(since: since)
        let refusals = try await administration.refusals(productId: nil, limit: 10)
        let model = ConsoleOverview(products: products, counts: counts, since: since, refusals: refusals)
        return page("overview", "Overview", section: "overview", signed, model, refresh: 30)
    }

    @Sendable func products(_ request: Request, context: Context) async throws -> Response {
        let signed = try signedIn(request)
        let rows = try await administration.products().map(ProductRow.init)
        return page("products", "Products", section: "products", signed, ["products": rows, "none": rows.isEmpty])
    }

    @Sendable func createProduct(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let quota = try quotaField(form)
        let input = ProductCreateInput(
            name: form.text("name"), authType: form["authType"] == "certificate" ? .certificate : .key,
            dynamicRegistration: form.isOn("dynamicRegistration"), autoCreate: form.isOn("autoCreate"),
            deviceQuota: quota, allowClocklessDevices: form.isOn("allowClocklessDevices"))
        let product = try await administration.createProduct(input)
        await audit("Admin.ProductCreated", product: product.id, context)
        throw redirect("/console/products/\(product.id)", flash: "Product \(product.name) created.", signed)
    }

    /// `deviceQuota`: empty means no quota.
    private func quotaField(_ form: FormFields) throws -> Int?? {
        guard let text = form.text("deviceQuota") else { return .some(nil) }
        guard let quota = Int(text), quota >= 0 else {
            throw ConsoleFailure(status: .badRequest, message: "the quota must be a whole number, or empty for none")
        }
        return .some(quota)
    }

    private func productId(_ context: Context) throws -> String {
        let raw = try context.parameters.require("productId")
        return raw.removingPercentEncoding ?? raw
    }

    private func deviceName(_ context: Context) throws -> String {
        let raw = try context.parameters.require("deviceName")
        return raw.removingPercentEncoding ?? raw
    }

    /// The product's page; `form` and `error` show a refused change again, with what the operator typed.
    private func productPage(
        _ product: Product, _ signed: Signed, secret: Bool, form: ProductSettingsForm? = nil, error: String? = nil,
        status: HTTPResponse.Status = .ok
    ) async throws -> Response {
        let limits = try await administration.limits(productId: product.id)
        let lockouts = try await administration.lockouts(productId: product.id)
        let detail = ProductDetail(product, limits: limits, lockouts: lockouts, form: form, showSecret: secret)
        let page = ConsolePage(
            title: "Product \(product.name)", section: "products", signedIn: true, csrf: signed.session.csrfToken,
            flash: sessions.takeFlash(cookie: signed.cookie), error: error, content: detail)
        return assets.page("product", page, status: status)
    }

    @Sendable func product(_ request: Request, context: Context) async throws -> Response {
        let signed = try signedIn(request)
        return try await productPage(
            try await administration.product(id: try productId(context)), signed, secret: false)
    }

    @Sendable func showSecret(_ request: Request, context: Context) async throws -> Response {
        let (signed, _) = try await checkedForm(request, context)
        return try await productPage(
            try await administration.product(id: try productId(context)), signed, secret: true)
    }

    /// The settings form: switches, quota, limits, topic rules and trusted CAs in one change, checked by
    /// `ProductAdministration` as the admin API's PATCH is. A refusal shows the page again with the message and
    /// the form as sent; nothing is changed.
    @Sendable func updateProduct(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        let product = try await administration.product(id: id)
        let settings = ProductSettingsForm(form, trustedCACount: product.trustedDeviceCAs.count)
        do {
            let change = try settings.change(isCertificate: product.authType == .certificate)
            _ = try await administration.updateProduct(id: id, change.update, limits: change.limits)
        } catch let failure as ConsoleFailure {
            return try await productPage(
                product, signed, secret: false, form: settings, error: failure.message, status: failure.status)
        } catch let error as AdminError where error.code.status.code < 500 && error.code != .notFound {
            return try await productPage(
                product, signed, secret: false, form: settings, error: error.message,
                status: error.code.status)
        }
        await audit("Admin.ProductUpdated", product: id, context)
        throw redirect("/console/products/\(id)", flash: "Settings saved.", signed)
    }

    /// An address locked out after wrong signatures, let in again now (on this instance at once).
    @Sendable func clearLockout(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        let address = form.text("address") ?? ""
        try await administration.clearLockout(productId: id, address: address)
        await audit("Admin.LockoutCleared", product: id, device: AuditField.bounded(address), context)
        throw redirect("/console/products/\(id)", flash: "Lockout of \(address) cleared.", signed)
    }

    @Sendable func rotateSecret(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        if let ask = confirmed(
            form, signed, action: "/console/products/\(id)/rotate-secret",
            question: "Rotate the secret of product \(id)? Devices not yet registered need the new one.",
            button: "Rotate secret")
        {
            return ask
        }
        let product = try await administration.rotateSecret(productId: id)
        await audit("Admin.SecretRotated", product: id, context)
        return try await productPage(product, signed, secret: true)
    }

    @Sendable func deleteProduct(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        if let ask = confirmed(
            form, signed, action: "/console/products/\(id)/delete",
            question: "Delete product \(id) with all its devices and events? This cannot be undone.",
            button: "Delete product")
        {
            return ask
        }
        try await administration.deleteProduct(id: id)
        await audit("Admin.ProductDeleted", product: id, context)
        throw redirect("/console/products", flash: "Product \(id) deleted.", signed)
    }

    @Sendable func caCertificate(_ request: Request, context: Context) async throws -> Response {
        _ = try signedIn(request)
        let id = try productId(context)
        return download(try await administration.caCertificate(productId: id), name: "\(id)-ca.pem")
    }

    @Sendable func crl(_ request: Request, context: Context) async throws -> Response {
        _ = try signedIn(request)
        let id = try productId(context)
        return download(try await administration.crl(productId: id), name: "\(id)-crl.pem")
    }

    private func download(_ pem: String, name: String) -> Response {
        var response = Response.pem(pem)
        response.headers[.contentDisposition] = "attachment; filename=\"\(name)\""
        return response
    }

    /// Devices by name prefix and status, one page at a time: the store's cursor from the prefix on, cut where the
    /// names stop starting with it, so a search costs one page whatever the number of devices.
    @Sendable func devices(_ request: Request, context: Context) async throws -> Response {
        let signed = try signedIn(request)
        let id = try productId(context)
        let product = try await administration.product(id: id)
        let query = request.uri.queryParameters
        let prefix = query["prefix"].map { String($0) }.flatMap { $0.isEmpty ? nil : $0 }
        let statusText = query["status"].map { String($0) }.flatMap { $0.isEmpty ? nil : $0 }
        let status = statusText.flatMap(DeviceStatus.init(rawValue:))
        var after = query["after"].map { String($0) }.flatMap { $0.isEmpty ? nil : $0 }
        var found: [Device] = []
        if after == nil, let prefix {
            if let exact = try? await administration.device(productId: id, deviceName: prefix),
                status == nil || exact.status == status
            {
                found.append(exact)
            }
            after = prefix
        }
        let pageSize = 50
        let page = try await administration.devices(
            productId: id, status: status?.rawValue, limit: pageSize, after: after)
        let matching = page.devices.prefix { prefix == nil || $0.name.hasPrefix(prefix!) }
        found += matching
        let more = matching.count == page.devices.count && page.nextCursor != nil
        let model = DeviceListing(
            product: ProductRow(product), devices: found.map(DeviceRow.init), prefix: prefix ?? "",
            status: statusText ?? "", nextCursor: more ? page.nextCursor : nil)
        return self.page("devices", "Devices of \(product.name)", section: "products", signed, model)
    }

    @Sendable func createDevices(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        let product = try await administration.product(id: id)
        let names = (form["names"] ?? "").split(whereSeparator: \.isNewline)
            .map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard names.count <= 1000 else {
            throw ConsoleFailure(status: .badRequest, message: "at most 1000 names at once")
        }
        var results: [[String: Any]] = []
        for name in names {
            do {
                _ = try await administration.createDevice(productId: id, deviceName: name)
                await audit("Admin.DeviceCreated", product: id, device: name, context)
                results.append(["name": name, "ok": true, "message": "created"])
            } catch let error as AdminError {
                results.append(["name": name, "ok": false, "message": error.message])
            } catch let error as StoreError {
                results.append(["name": name, "ok": false, "message": AdminError(error).message])
            }
        }
        return page(
            "created-devices", "Devices created", section: "products", signed,
            ["product": ProductRow(product), "results": results, "none": results.isEmpty])
    }

    @Sendable func device(_ request: Request, context: Context) async throws -> Response {
        let signed = try signedIn(request)
        let id = try productId(context)
        let name = try deviceName(context)
        let device = try await administration.device(productId: id, deviceName: name)
        // The newest page; the API and the CLI page through the rest.
        let certificates = try await administration.certificates(productId: id, deviceName: name).certificates
        return page(
            "device", "Device \(name)", section: "products", signed,
            DeviceDetail(
                device: DeviceRow(device), certificates: certificates.map(CertificateRow.init),
                hasCertificates: !certificates.isEmpty))
    }

    private func deviceAction(
        _ request: Request, _ context: Context, verb: String, question: String?,
        _ act: (String, String) async throws -> Void
    ) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        let name = try deviceName(context)
        let path = "/console/products/\(id)/devices/\(Self.pathComponent(name))"
        if let question,
            let ask = confirmed(form, signed, action: "\(path)/\(verb)", question: question, button: verb.capitalized)
        {
            return ask
        }
        try await act(id, name)
        let action: String
        switch verb {
        case "reset": action = "Admin.DeviceReset"
        case "activate": action = "Admin.DeviceActivated"
        default: action = "Admin.DeviceDeleted"
        }
        await audit(action, product: id, device: name, context)
        throw redirect(
            verb == "delete" ? "/console/products/\(id)/devices" : path, flash: "Device \(name): \(verb) done.", signed)
    }

    @Sendable func resetDevice(_ request: Request, context: Context) async throws -> Response {
        try await deviceAction(
            request, context, verb: "reset",
            question: "Reset this device? Its credential stops working and it may register again."
        ) { _ = try await administration.resetDevice(productId: $0, deviceName: $1) }
    }

    @Sendable func deleteDevice(_ request: Request, context: Context) async throws -> Response {
        try await deviceAction(
            request, context, verb: "delete", question: "Delete this device and its credential?"
        ) { try await administration.deleteDevice(productId: $0, deviceName: $1) }
    }

    @Sendable func activateDevice(_ request: Request, context: Context) async throws -> Response {
        try await deviceAction(request, context, verb: "activate", question: nil) {
            _ = try await administration.activateDevice(productId: $0, deviceName: $1)
        }
    }

    @Sendable func revokeCertificate(_ request: Request, context: Context) async throws -> Response {
        let (signed, form) = try await checkedForm(request, context)
        let id = try productId(context)
        let serial = try context.parameters.require("serial")
        let device = form.text("device") ?? ""
        if let ask = confirmed(
            form, signed, action: "/console/products/\(id)/certificates/\(serial)/revoke",
            question: "Revoke certificate \(serial)? Brokers refuse it once they have the new CRL.",
            button: "Revoke certificate", extra: ["device": device])
        {
            return ask
        }
        let certificate = try await administration.revokeCertificate(productId: id, serial: serial)
        await audit("Admin.CertificateRevoked", product: id, device: certificate.deviceName, context)
        throw redirect(
            "/console/products/\(id)/devices/\(Self.pathComponent(certificate.deviceName))",
            flash: "Certificate \(serial) revoked.", signed)
    }

    @Sendable func events(_ request: Request, context: Context) async throws -> Response {
        let signed = try signedIn(request)
        let query = request.uri.queryParameters
        let productFilter = query["product"].map { String($0) }.flatMap { $0.isEmpty ? nil : $0 }
        let deviceFilter = query["device"].map { String($0) }.flatMap { $0.isEmpty ? nil : $0 }
        let outcomeFilter = query["outcome"].map { String($0) }.flatMap { $0.isEmpty ? nil : $0 }
        let products = try await administration.products()
        // Filtered in the store: one product's index, or the whole log's newest events.
        let shown: [RegistrationEvent]
        if let productFilter {
            if products.contains(where: { $0.id == productFilter }) {
                shown = try await administration.events(
                    productId: productFilter, limit: Self.eventsShown, before: nil, outcome: outcomeFilter,
                    deviceName: deviceFilter
                ).events
            } else {
                shown = []
            }
        } else {
            shown = try await administration.recentEvents(
                limit: Self.eventsShown, outcome: outcomeFilter, deviceName: deviceFilter,
                scanLimit: Self.eventsScannedAcrossProducts)
        }
        let model: [String: Any] = [
            "events": shown.map(EventRow.init), "none": shown.isEmpty, "product": productFilter ?? "",
            "device": deviceFilter ?? "", "outcome": outcomeFilter ?? "",
            "products": products.map { ["id": $0.id, "name": $0.name, "selected": $0.id == productFilter] },
        ]
        return page("events", "Events", section: "events", signed, model, refresh: 10)
    }

    static var eventsShown: Int { 200 }
    /// Filters over every product look through this many of the newest events at most, so a rare outcome costs a
    /// bounded scan; a product's own log is searched whole through its index.
    static var eventsScannedAcrossProducts: Int { 100_000 }

    /// A device name as one path segment.
    static func pathComponent(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .alphanumerics.union(CharacterSet(charactersIn: "-._~")))
            ?? text
    }
}
