import DynRegProtocol
import DynRegStore
import Foundation
import HTTPTypes
import Hummingbird
import Logging
import NIOCore

/// `/admin/v1`: products, devices and the audit log, behind a bearer token. Each route is a named handler that
/// reads the request, calls `ProductAdministration` and shapes the answer; `AdminErrorMiddleware` is the one
/// place a failure becomes an HTTP answer.
struct AdminRoutes<Store: RegistrationStore>: Sendable {
    typealias Context = DynRegRequestContext

    let administration: ProductAdministration<Store>
    /// The admin token's check, with the failures it has counted per address.
    let authentication: BearerTokenMiddleware
    /// Written out before the refusal counts are read, so that they include the current minute.
    let refusalTally: RefusalTally?

    init(
        store: Store, token: String, authorities: CertificateAuthorities, revocations: RevocationNotifier? = nil,
        throttle: AdminLoginThrottle = AdminLoginThrottle(), metrics: ServerMetrics = ServerMetrics(),
        refusals: RefusalTally? = nil, lockouts: SignatureLockouts? = nil, productLimits: ProductLimitsCache? = nil
    ) {
        administration = ProductAdministration(
            store: store, authorities: authorities, revocations: revocations, lockouts: lockouts,
            productLimits: productLimits)
        authentication = BearerTokenMiddleware(tokens: [token], throttle: throttle, metrics: metrics)
        refusalTally = refusals
    }

    func register(on group: RouterGroup<Context>) {
        group.add(middleware: AdminErrorMiddleware())
        group.add(middleware: authentication)

        group.post("/products", use: createProduct)
        group.get("/products", use: listProducts)
        group.get("/products/{productId}", use: showProduct)
        group.patch("/products/{productId}", use: updateProduct)
        group.post("/products/{productId}/rotate-secret", use: rotateSecret)
        group.delete("/products/{productId}", use: deleteProduct)
        group.get("/products/{productId}/ca", use: caCertificate)
        group.get("/products/{productId}/crl", use: crl)
        group.get("/products/{productId}/events", use: events)
        group.get("/products/{productId}/lockouts", use: lockouts)
        group.delete("/products/{productId}/lockouts/{address}", use: clearLockout)
        group.get("/refusals", use: refusals)

        group.post("/products/{productId}/devices", use: createDevice)
        group.get("/products/{productId}/devices", use: listDevices)
        group.get("/products/{productId}/devices/{deviceName}", use: showDevice)
        group.delete("/products/{productId}/devices/{deviceName}", use: deleteDevice)
        group.post("/products/{productId}/devices/{deviceName}/reset", use: resetDevice)
        group.post("/products/{productId}/devices/{deviceName}/activate", use: activateDevice)
        group.get("/products/{productId}/devices/{deviceName}/certificates", use: certificates)
        group.post("/products/{productId}/certificates/{serial}/revoke", use: revokeCertificate)
    }

    // MARK: Products

    @Sendable func createProduct(_ request: Request, context: Context) async throws -> EditedResponse<ProductView> {
        let bytes = try await body(shape: .productCreate, request, context)
        let input = try decode(ProductCreateInput.self, bytes)
        let limitsInput = try decode(ProductLimitsInput.self, bytes)
        let product = try await administration.createProduct(input, limits: limitsInput)
        await audit(.productCreated, product: product.id, context)
        let limits = try await administration.limits(productId: product.id)
        return EditedResponse(status: .created, response: ProductView(product, includeSecret: true, limits: limits))
    }

    @Sendable func listProducts(_ request: Request, context: Context) async throws -> ProductList {
        var views: [ProductView] = []
        for product in try await administration.products() {
            views.append(
                ProductView(
                    product, includeSecret: false, limits: try await administration.limits(productId: product.id)))
        }
        return ProductList(products: views)
    }

    @Sendable func showProduct(_ request: Request, context: Context) async throws -> ProductView {
        try await view(administration.product(id: try productId(context)))
    }

    @Sendable func updateProduct(_ request: Request, context: Context) async throws -> ProductView {
        let id = try productId(context)
        let bytes = try await body(shape: .productUpdate, request, context)
        let update = try decode(ProductUpdate.self, bytes)
        let limitsInput = try decode(ProductLimitsInput.self, bytes)
        let product = try await administration.updateProduct(id: id, update, limits: limitsInput)
        await audit(.productUpdated, product: id, context)
        return try await view(product)
    }

    @Sendable func rotateSecret(_ request: Request, context: Context) async throws -> ProductView {
        let product = try await administration.rotateSecret(productId: try productId(context))
        await audit(.secretRotated, product: product.id, context)
        return try await view(product)
    }

    /// A product with its secret and limits.
    private func view(_ product: Product) async throws -> ProductView {
        ProductView(product, includeSecret: true, limits: try await administration.limits(productId: product.id))
    }

    @Sendable func lockouts(_ request: Request, context: Context) async throws -> LockoutList {
        LockoutList(
            lockouts: try await administration.lockouts(productId: try productId(context)).map(LockoutView.init))
    }

    @Sendable func clearLockout(_ request: Request, context: Context) async throws -> HTTPResponse.Status {
        let address = try parameter("address", context)
        try await administration.clearLockout(productId: try productId(context), address: address)
        await audit(.lockoutCleared, product: try productId(context), device: AuditField.bounded(address), context)
        return .noContent
    }

    @Sendable func deleteProduct(_ request: Request, context: Context) async throws -> HTTPResponse.Status {
        try await administration.deleteProduct(id: try productId(context))
        await audit(.productDeleted, product: try productId(context), context)
        return .noContent
    }

    @Sendable func caCertificate(_ request: Request, context: Context) async throws -> Response {
        .pem(try await administration.caCertificate(productId: try productId(context)))
    }

    @Sendable func crl(_ request: Request, context: Context) async throws -> Response {
        .pem(try await administration.crl(productId: try productId(context)))
    }

    /// Newest first: `limit`, `before` (the previous page's `nextCursor`), `since` (ISO 8601), `outcome`, `device`.
    @Sendable func events(_ request: Request, context: Context) async throws -> EventList {
        let query = request.uri.queryParameters
        var since: Date?
        if let text = query["since"] {
            guard let date = try? Date(String(text), strategy: .iso8601) else {
                throw AdminError(.invalidInput, "since must be an ISO 8601 time such as 2026-12-01T00:00:00Z")
            }
            since = date
        }
        var before: Int64?
        if let text = query["before"] {
            guard let id = Int64(String(text)) else { throw AdminError(.invalidInput, "before must be an event id") }
            before = id
        }
        let page = try await administration.events(
            productId: try productId(context), limit: limit(request), before: before, since: since,
            outcome: query["outcome"].map(String.init), deviceName: query["device"].map(String.init))
        return EventList(events: page.events.map(EventView.init), nextCursor: page.nextCursor)
    }

    // MARK: Devices

    @Sendable func createDevice(_ request: Request, context: Context) async throws -> EditedResponse<DeviceView> {
        let id = try productId(context)
        let input = try await decode(DeviceCreateInput.self, shape: .deviceCreate, request, context)
        let device = try await administration.createDevice(productId: id, deviceName: input.deviceName)
        await audit(.deviceCreated, product: id, device: device.name, context)
        return EditedResponse(status: .created, response: DeviceView(device))
    }

    @Sendable func listDevices(_ request: Request, context: Context) async throws -> DeviceList {
        let query = request.uri.queryParameters
        let page = try await administration.devices(
            productId: try productId(context), status: query["status"].map(String.init), limit: limit(request),
            after: query["after"].map(String.init))
        return DeviceList(devices: page.devices.map(DeviceView.init), nextCursor: page.nextCursor)
    }

    @Sendable func showDevice(_ request: Request, context: Context) async throws -> DeviceView {
        let (id, name) = try device(context)
        return DeviceView(try await administration.device(productId: id, deviceName: name))
    }

    @Sendable func deleteDevice(_ request: Request, context: Context) async throws -> HTTPResponse.Status {
        let (id, name) = try device(context)
        try await administration.deleteDevice(productId: id, deviceName: name)
        await audit(.deviceDeleted, product: id, device: name, context)
        return .noContent
    }

    @Sendable func resetDevice(_ request: Request, context: Context) async throws -> DeviceView {
        let (id, name) = try device(context)
        let device = try await administration.resetDevice(productId: id, deviceName: name)
        await audit(.deviceReset, product: id, device: name, context)
        return DeviceView(device)
    }

    @Sendable func activateDevice(_ request: Request, context: Context) async throws -> DeviceView {
        let (id, name) = try device(context)
        let device = try await administration.activateDevice(productId: id, deviceName: name)
        await audit(.deviceActivated, product: id, device: name, context)
        return DeviceView(device)
    }

    @Sendable func certificates(_ request: Request, context: Context) async throws -> CertificateList {
        let (id, name) = try device(context)
        let page = try await administration.certificates(
            productId: id, deviceName: name, limit: limit(request),
            after: request.uri.queryParameters["after"].map(String.init))
        return CertificateList(certificates: page.certificates.map(CertificateView.init), nextCursor: page.nextCursor)
    }

    @Sendable func revokeCertificate(_ request: Request, context: Context) async throws -> CertificateView {
        let id = try productId(context)
        let serial = try parameter("serial", context)
        let certificate = try await administration.revokeCertificate(productId: id, serial: serial)
        await audit(.certificateRevoked, product: id, device: certificate.deviceName, context)
        return CertificateView(certificate)
    }

    // MARK: The audit log

    /// What an operator did, as the audit log's outcome.
    enum AdminAction: String {
        case productCreated = "Admin.ProductCreated"
        case productUpdated = "Admin.ProductUpdated"
        case secretRotated = "Admin.SecretRotated"
        case productDeleted = "Admin.ProductDeleted"
        case deviceCreated = "Admin.DeviceCreated"
        case deviceReset = "Admin.DeviceReset"
        case deviceActivated = "Admin.DeviceActivated"
        case deviceDeleted = "Admin.DeviceDeleted"
        case certificateRevoked = "Admin.CertificateRevoked"
        case lockoutCleared = "Admin.LockoutCleared"
    }

    /// One event for a change an operator made: the endpoint says `admin`, with the token's fingerprint.
    private func audit(_ action: AdminAction, product: String, device: String = "", _ context: Context) async {
        await administration.recordAction(
            RegistrationEvent(
                time: Date(), productId: product, deviceName: device, outcome: action.rawValue,
                remoteAddress: context.remoteAddressText,
                endpoint: "admin token \(context.adminTokenFingerprint ?? "-")"),
            logger: context.logger)
    }

    // MARK: Reading requests

    /// A path parameter, percent-decoded: Hummingbird hands them over raw, and clients encode `:` and `@`.
    private func parameter(_ name: String, _ context: Context) throws -> String {
        let raw = try context.parameters.require(name)
        return raw.removingPercentEncoding ?? raw
    }

    private func productId(_ context: Context) throws -> String {
        try parameter("productId", context)
    }

    private func device(_ context: Context) throws -> (productId: String, deviceName: String) {
        (try parameter("productId", context), try parameter("deviceName", context))
    }

    /// `?limit=N`; anything but a number means the default.
    /// `?product=P` for one product's, `?product=` for requests that named no known product; all by default.
    @Sendable func refusals(_ request: Request, context: Context) async throws -> RefusalList {
        await refusalTally?.flush(includingCurrent: true)
        let product = request.uri.queryParameters["product"].map { String($0) }
        let counts = try await administration.refusals(productId: product, limit: limit(request))
        return RefusalList(refusals: counts.map(RefusalView.init))
    }

    private func limit(_ request: Request) -> Int? {
        request.uri.queryParameters["limit"].flatMap { Int(String($0)) }
    }

    /// The body as `T`, after ``StrictJSON`` has checked its keys against `shape`.
    private func decode<T: Decodable>(
        _ type: T.Type, shape: JSONShape, _ request: Request, _ context: Context
    ) async throws -> T {
        try decode(T.self, try await body(shape: shape, request, context))
    }

    private func decode<T: Decodable>(_ type: T.Type, _ bytes: [UInt8]) throws -> T {
        do {
            return try JSONDecoder().decode(T.self, from: Data(bytes))
        } catch {
            throw AdminError(.invalidBody, "the body is not the expected JSON object")
        }
    }

    /// The body's bytes, once ``StrictJSON`` has checked its keys against `shape`.
    private func body(shape: JSONShape, _ request: Request, _ context: Context) async throws -> [UInt8] {
        guard let body = try? await request.body.collect(upTo: context.maxUploadSize) else {
            throw AdminError(.invalidBody, "the body is larger than \(context.maxUploadSize / 1024) KiB")
        }
        let bytes = Array(buffer: body)
        do {
            try StrictJSON.check(bytes, shape: shape)
        } catch .unknownField(let name) {
            throw AdminError(.invalidBody, "unknown field \(name)")
        } catch .duplicateKey(let name) {
            throw AdminError(.invalidBody, "the key \(name) appears twice")
        } catch .malformed {
            throw AdminError(.invalidBody, "the body is not a JSON object")
        }
        return bytes
    }

}

/// The one place an admin failure becomes an HTTP answer: `{"error":{"code":…,"message":…}}` with the code's
/// status. Store errors are translated, Hummingbird's own answers pass, anything else is logged and internal.
struct AdminErrorMiddleware: RouterMiddleware {
    typealias Context = DynRegRequestContext

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        do {
            return try await next(request, context)
        } catch let error as AdminError {
            return try Self.response(error)
        } catch let error as StoreError {
            return try Self.response(AdminError(error))
        } catch let error as any HTTPResponseError {
            throw error
        } catch is CancellationError {
            throw CancellationError()
        } catch {
            context.logger.error("admin request failed", metadata: ["dynreg.error": "\(error)"])
            return try Self.response(AdminError(.internalError, "the store failed; see the server log"))
        }
    }

    static func response(_ error: AdminError) throws -> Response {
        let data = try JSONEncoder().encode(AdminErrorBody(code: error.code.code, message: error.message))
        var response = Response.json(status: error.code.status, bytes: Array(data))
        if error.code.status == .unauthorized { response.headers[HTTPField.Name.wwwAuthenticate] = "Bearer" }
        if let seconds = error.retryAfter { response.headers[HTTPField.Name.retryAfter] = "\(seconds)" }
        return response
    }
}

/// Checks the bearer token: one of `tokens` (``TokenDigest``s, each compared, so which one matched does not show).
/// Failures are counted per client address (``AdminLoginThrottle``): the first of a window and the one that locks
/// the address are logged with the address, never with what was presented.
struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = DynRegRequestContext
    let tokens: [TokenDigest]
    let throttle: AdminLoginThrottle
    let metrics: ServerMetrics

    init(tokens: [String], throttle: AdminLoginThrottle, metrics: ServerMetrics) {
        self.tokens = tokens.map(TokenDigest.init)
        self.throttle = throttle
        self.metrics = metrics
    }

    func handle(
        _ request: Request, context: Context, next: (Request, Context) async throws -> Response
    ) async throws
        -> Response
    {
        let address = context.remoteAddressText
        if let remaining = throttle.lockRemaining(address) {
            metrics.refusal(.adminLockout)
            throw AdminError.locked(retryAfter: remaining)
        }
        let prefix = "Bearer "
        let header = request.headers[.authorization]
        let presented = header.flatMap { $0.hasPrefix(prefix) ? Array($0.utf8.dropFirst(prefix.utf8.count)) : nil }
        // Every token is compared: `filter` rather than `contains`, which would stop at the first match.
        guard let presented, let matched = tokens.filter({ $0.matches(presented) }).first else {
            metrics.refusal(.adminToken)
            let verdict = throttle.recordFailure(address)
            if verdict.log {
                context.logger.warning(
                    verdict.lockedUntil == nil
                        ? "admin request with a missing or wrong token" : "admin requests refused for a while",
                    metadata: ["dynreg.remote": "\(address)", "dynreg.path": "\(request.uri.path)"])
            }
            if let until = verdict.lockedUntil { throw AdminError.locked(retryAfter: until.timeIntervalSinceNow) }
            throw AdminError(
                .unauthorized, header == nil ? "missing Authorization: Bearer <admin token>" : "wrong admin token")
        }
        var context = context
        context.adminTokenFingerprint = matched.fingerprint
        return try await next(request, context)
    }
}

extension ProductView: ResponseEncodable {}
extension ProductList: ResponseEncodable {}
extension DeviceView: ResponseEncodable {}
extension DeviceList: ResponseEncodable {}
extension EventView: ResponseEncodable {}
extension EventList: ResponseEncodable {}
extension RefusalList: ResponseEncodable {}
extension LockoutList: ResponseEncodable {}
extension CertificateView: ResponseEncodable {}
extension CertificateList: ResponseEncodable {}

extension Response {
    static func pem(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/x-pem-file"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
