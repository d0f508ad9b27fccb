import DynRegCA
import DynRegProtocol
import DynRegStore
import Foundation
import Hummingbird
import HTTPTypes
import NIOCore

/// `/admin/v1`: products, devices and the audit log, behind a bearer token.
struct AdminRoutes<Store: RegistrationStore>: Sendable {
    let store: Store
    let token: String
    let authorities: CertificateAuthorities

    func register(on group: RouterGroup<DynRegRequestContext>) {
        group.add(middleware: BearerTokenMiddleware(token: token))

        group.post("/products") { request, context -> EditedResponse<ProductView> in
            let input = try await decode(ProductCreateInput.self, request, context)
            guard let name = input.name, !name.trimmingCharacters(in: .whitespaces).isEmpty, name.count <= 200 else {
                throw AdminError(.badRequest, "InvalidName", "name must be 1-200 characters")
            }
            if let quota = input.deviceQuota, quota < 0 {
                throw AdminError(.badRequest, "InvalidQuota", "deviceQuota must be zero or more")
            }
            let id = Secrets.productId()
            let authType = input.authType ?? .key
            var stored: StoredCertificateAuthority?
            if authType == .certificate {
                let validity = input.certificateValidityDays ?? 3650
                guard (1...36_500).contains(validity) else {
                    throw AdminError(.badRequest, "InvalidValidity", "certificateValidityDays must be 1-36500")
                }
                stored = try makeAuthority(productId: id, input: input, validityDays: validity)
            } else if input.caCertificatePem != nil || input.caPrivateKeyPem != nil || input.caKeyType != nil {
                throw AdminError(.badRequest, "InvalidAuthType", "CA settings apply to certificate products only")
            }
            let product = Product(
                id: id, name: name, authType: authType, secret: Secrets.productSecret(),
                dynamicRegistration: input.dynamicRegistration ?? true, autoCreate: input.autoCreate ?? true,
                deviceQuota: input.deviceQuota, allowClocklessDevices: input.allowClocklessDevices ?? false,
                deviceCount: 0, createdAt: Date(), certificateAuthority: stored)
            let created = try await mapped { try await store.createProduct(product) }
            return EditedResponse(status: .created, response: ProductView(created, includeSecret: true))
        }
        group.get("/products") { _, _ -> ProductList in
            ProductList(products: try await mapped { try await store.products() }.map { ProductView($0, includeSecret: false) })
        }
        group.get("/products/{productId}") { _, context -> ProductView in
            let id = try context.parameters.require("productId")
            guard let product = try await mapped({ try await store.product(id: id) }) else {
                throw AdminError.productNotFound(id)
            }
            return ProductView(product, includeSecret: true)
        }
        group.patch("/products/{productId}") { request, context -> ProductView in
            let id = try context.parameters.require("productId")
            let input = try await decode(ProductUpdateInput.self, request, context)
            if case .some(.some(let quota)) = input.deviceQuota, quota < 0 {
                throw AdminError(.badRequest, "InvalidQuota", "deviceQuota must be zero or more")
            }
            let update = ProductUpdate(
                name: input.name, dynamicRegistration: input.dynamicRegistration, autoCreate: input.autoCreate,
                deviceQuota: input.deviceQuota, allowClocklessDevices: input.allowClocklessDevices)
            return ProductView(try await mapped { try await store.updateProduct(id: id, update) }, includeSecret: true)
        }
        group.post("/products/{productId}/rotate-secret") { _, context -> ProductView in
            let id = try context.parameters.require("productId")
            let product = try await mapped { try await store.rotateProductSecret(id: id, newSecret: Secrets.productSecret()) }
            return ProductView(product, includeSecret: true)
        }
        group.delete("/products/{productId}") { _, context -> HTTPResponse.Status in
            let id = try context.parameters.require("productId")
            try await mapped { try await store.deleteProduct(id: id) }
            return .noContent
        }

        group.post("/products/{productId}/devices") { request, context -> EditedResponse<DeviceView> in
            let id = try context.parameters.require("productId")
            let input = try await decode(DeviceCreateInput.self, request, context)
            guard DeviceNameRules.isValid(input.deviceName) else {
                throw AdminError(
                    .badRequest, RegistrationErrorCode.deviceNameInvalid.code,
                    RegistrationErrorCode.deviceNameInvalid.defaultMessage)
            }
            let device = try await mapped { try await store.createDevice(productId: id, deviceName: input.deviceName, now: Date()) }
            return EditedResponse(status: .created, response: DeviceView(device))
        }
        group.get("/products/{productId}/devices") { request, context -> DeviceList in
            let id = try context.parameters.require("productId")
            let query = request.uri.queryParameters
            var status: DeviceStatus?
            if let text = query["status"] {
                guard let parsed = DeviceStatus(rawValue: String(text)) else {
                    throw AdminError(.badRequest, "InvalidStatus", "status must be created, registered or activated")
                }
                status = parsed
            }
            let limit = min(max(query["limit"].flatMap { Int(String($0)) } ?? 100, 1), 1000)
            let after = query["after"].map(String.init)
            let devices = try await mapped { try await store.devices(productId: id, status: status, limit: limit, after: after) }
            return DeviceList(
                devices: devices.map(DeviceView.init), nextCursor: devices.count == limit ? devices.last?.name : nil)
        }
        group.get("/products/{productId}/devices/{deviceName}") { _, context -> DeviceView in
            let id = try context.parameters.require("productId")
            let name = try context.parameters.require("deviceName")
            guard let device = try await mapped({ try await store.device(productId: id, deviceName: name) }) else {
                throw AdminError.deviceNotFound(name)
            }
            return DeviceView(device)
        }
        group.delete("/products/{productId}/devices/{deviceName}") { _, context -> HTTPResponse.Status in
            let id = try context.parameters.require("productId")
            let name = try context.parameters.require("deviceName")
            try await mapped { try await store.deleteDevice(productId: id, deviceName: name) }
            return .noContent
        }
        group.post("/products/{productId}/devices/{deviceName}/reset") { _, context -> DeviceView in
            let id = try context.parameters.require("productId")
            let name = try context.parameters.require("deviceName")
            return DeviceView(try await mapped { try await store.resetDevice(productId: id, deviceName: name) })
        }
        group.post("/products/{productId}/devices/{deviceName}/activate") { _, context -> DeviceView in
            let id = try context.parameters.require("productId")
            let name = try context.parameters.require("deviceName")
            return DeviceView(try await mapped { try await store.activateDevice(productId: id, deviceName: name, now: Date()) })
        }
        group.get("/products/{productId}/ca") { _, context -> Response in
            let product = try await certificateProduct(try context.parameters.require("productId"))
            return Response.pem(product.certificateAuthority?.certificatePEM ?? "")
        }
        group.get("/products/{productId}/crl") { _, context -> Response in
            let product = try await certificateProduct(try context.parameters.require("productId"))
            guard let authority = try? authorities.authority(for: product) else {
                throw AdminError(.internalServerError, "InternalError", "the product CA could not be opened")
            }
            let revoked = try await mapped { try await store.revokedCertificates(productId: product.id) }
            let now = Date()
            // Seconds since the epoch: increasing across restarts and instances without shared state.
            let crl = try authority.crl(
                revoked: revoked.map { ($0.serial, $0.revokedAt ?? now) }, number: Int(now.timeIntervalSince1970),
                now: now)
            return Response.pem(crl)
        }
        group.get("/products/{productId}/devices/{deviceName}/certificates") { _, context -> CertificateList in
            let id = try context.parameters.require("productId")
            let name = try context.parameters.require("deviceName")
            let certificates = try await mapped { try await store.certificates(productId: id, deviceName: name) }
            return CertificateList(certificates: certificates.map(CertificateView.init))
        }
        group.post("/products/{productId}/certificates/{serial}/revoke") { _, context -> CertificateView in
            let id = try context.parameters.require("productId")
            let serial = try context.parameters.require("serial")
            return CertificateView(try await mapped { try await store.revokeCertificate(productId: id, serial: serial, now: Date()) })
        }
        group.get("/products/{productId}/events") { request, context -> EventList in
            let id = try context.parameters.require("productId")
            let limit = min(max(request.uri.queryParameters["limit"].flatMap { Int(String($0)) } ?? 100, 1), 1000)
            guard try await mapped({ try await store.product(id: id) }) != nil else { throw AdminError.productNotFound(id) }
            let events = try await mapped { try await store.events(productId: id, limit: limit) }
            return EventList(events: events.map(EventView.init))
        }
    }

    private func certificateProduct(_ id: String) async throws -> Product {
        guard let product = try await mapped({ try await store.product(id: id) }) else {
            throw AdminError.productNotFound(id)
        }
        guard product.certificateAuthority != nil else {
            throw AdminError(.notFound, "NotFound", "product \(id) uses key authentication and has no CA")
        }
        return product
    }

    private func makeAuthority(productId: String, input: ProductCreateInput, validityDays: Int) throws
        -> StoredCertificateAuthority
    {
        let authority: ProductCertificateAuthority
        switch (input.caCertificatePem, input.caPrivateKeyPem) {
        case (let certificate?, let key?):
            do {
                authority = try ProductCertificateAuthority(certificatePEM: certificate, privateKeyPEM: key)
            } catch {
                throw AdminError(.badRequest, "InvalidCertificateAuthority", error.description)
            }
        case (nil, nil):
            guard let keyType = CAKeyType(rawValue: input.caKeyType ?? "p256") else {
                throw AdminError(.badRequest, "InvalidKeyType", "caKeyType must be p256, p384 or rsa2048")
            }
            do {
                authority = try ProductCertificateAuthority.create(productId: productId, keyType: keyType)
            } catch {
                throw AdminError(.internalServerError, "InternalError", "the CA could not be created")
            }
        default:
            throw AdminError(
                .badRequest, "InvalidCertificateAuthority", "caCertificatePem and caPrivateKeyPem go together")
        }
        do {
            return try authorities.stored(authority, productId: productId, validityDays: validityDays)
        } catch {
            throw AdminError(.internalServerError, "InternalError", "the CA key could not be sealed")
        }
    }

    private func decode<T: Decodable>(_ type: T.Type, _ request: Request, _ context: DynRegRequestContext) async throws -> T {
        do {
            return try await request.decode(as: T.self, context: context)
        } catch {
            throw AdminError(.badRequest, "InvalidBody", "the body is not the expected JSON object")
        }
    }

    /// Store errors become admin errors; anything else is logged and reported as internal.
    private func mapped<T>(_ operation: () async throws -> T) async throws -> T {
        do {
            return try await operation()
        } catch let error as StoreError {
            switch error.code {
            case .productNotFound, .deviceNotFound: throw AdminError(.notFound, "NotFound", error.message)
            case .deviceExists, .productExists: throw AdminError(.conflict, "Conflict", error.message)
            case .quotaExceeded: throw AdminError(.conflict, RegistrationErrorCode.deviceQuota.code, error.message)
            case .certificateNotFound: throw AdminError(.notFound, "NotFound", error.message)
            case .invalidInput: throw AdminError(.badRequest, "InvalidInput", error.message)
            case .unavailable: throw AdminError(.serviceUnavailable, "Unavailable", error.message)
            }
        } catch let error as AdminError {
            throw error
        } catch {
            throw AdminError(.internalServerError, "InternalError", "the store failed; see the server log")
        }
    }
}

/// An admin API failure: `{"error":{"code":…,"message":…}}` with a matching status.
struct AdminError: HTTPResponseError {
    let status: HTTPResponse.Status
    let code: String
    let message: String

    init(_ status: HTTPResponse.Status, _ code: String, _ message: String) {
        self.status = status
        self.code = code
        self.message = message
    }

    static func productNotFound(_ id: String) -> Self { Self(.notFound, "NotFound", "product \(id) does not exist") }
    static func deviceNotFound(_ name: String) -> Self { Self(.notFound, "NotFound", "device \(name) does not exist") }

    func response(from request: Request, context: some RequestContext) throws -> Response {
        let data = try JSONEncoder().encode(AdminErrorBody(error: .init(code: code, message: message)))
        var response = Response.json(status: status, bytes: Array(data))
        if status == .unauthorized { response.headers[HTTPField.Name.wwwAuthenticate] = "Bearer" }
        return response
    }
}

private struct AdminErrorBody: Encodable {
    struct Inner: Encodable {
        var code: String
        var message: String
    }
    var error: Inner
}

/// Compares the bearer token in constant time.
struct BearerTokenMiddleware: RouterMiddleware {
    typealias Context = DynRegRequestContext
    let token: [UInt8]

    init(token: String) { self.token = Array(token.utf8) }

    func handle(_ request: Request, context: Context, next: (Request, Context) async throws -> Response) async throws
        -> Response
    {
        guard let header = request.headers[.authorization] else {
            throw AdminError(.unauthorized, "Unauthorized", "missing Authorization: Bearer <admin token>")
        }
        let prefix = "Bearer "
        guard header.hasPrefix(prefix), constantTimeEquals(Array(header.dropFirst(prefix.count).utf8), token) else {
            throw AdminError(.unauthorized, "Unauthorized", "wrong admin token")
        }
        return try await next(request, context)
    }
}

// MARK: JSON shapes

struct ProductCreateInput: Decodable {
    var name: String?
    var authType: AuthType?
    var dynamicRegistration: Bool?
    var autoCreate: Bool?
    var deviceQuota: Int?
    var allowClocklessDevices: Bool?
    var caKeyType: String?
    var certificateValidityDays: Int?
    var caCertificatePem: String?
    var caPrivateKeyPem: String?
}

struct ProductUpdateInput: Decodable {
    var name: String?
    var dynamicRegistration: Bool?
    var autoCreate: Bool?
    /// Absent: unchanged; `null`: no quota.
    var deviceQuota: Int??
    var allowClocklessDevices: Bool?

    enum CodingKeys: String, CodingKey {
        case name, dynamicRegistration, autoCreate, deviceQuota, allowClocklessDevices
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        name = try container.decodeIfPresent(String.self, forKey: .name)
        dynamicRegistration = try container.decodeIfPresent(Bool.self, forKey: .dynamicRegistration)
        autoCreate = try container.decodeIfPresent(Bool.self, forKey: .autoCreate)
        allowClocklessDevices = try container.decodeIfPresent(Bool.self, forKey: .allowClocklessDevices)
        if container.contains(.deviceQuota) {
            deviceQuota = .some(try container.decodeIfPresent(Int.self, forKey: .deviceQuota))
        }
    }
}

struct DeviceCreateInput: Decodable {
    var deviceName: String
}

struct ProductView: ResponseEncodable {
    var productId: String
    var name: String
    var authType: AuthType
    var productSecret: String?
    var dynamicRegistration: Bool
    var autoCreate: Bool
    var deviceQuota: Int?
    var allowClocklessDevices: Bool
    var deviceCount: Int
    var createdAt: Date
    var caKeyType: String?
    var certificateValidityDays: Int?

    init(_ product: Product, includeSecret: Bool) {
        productId = product.id
        name = product.name
        authType = product.authType
        productSecret = includeSecret ? product.secret : nil
        dynamicRegistration = product.dynamicRegistration
        autoCreate = product.autoCreate
        deviceQuota = product.deviceQuota
        allowClocklessDevices = product.allowClocklessDevices
        deviceCount = product.deviceCount
        createdAt = product.createdAt
        caKeyType = product.certificateAuthority?.keyType
        certificateValidityDays = product.certificateAuthority?.certificateValidityDays
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(productId, forKey: .productId)
        try container.encode(name, forKey: .name)
        try container.encode(authType, forKey: .authType)
        try container.encodeIfPresent(productSecret, forKey: .productSecret)
        try container.encode(dynamicRegistration, forKey: .dynamicRegistration)
        try container.encode(autoCreate, forKey: .autoCreate)
        try container.encode(deviceQuota, forKey: .deviceQuota)  // null when unlimited
        try container.encode(allowClocklessDevices, forKey: .allowClocklessDevices)
        try container.encode(deviceCount, forKey: .deviceCount)
        try container.encode(createdAt, forKey: .createdAt)
        try container.encodeIfPresent(caKeyType, forKey: .caKeyType)
        try container.encodeIfPresent(certificateValidityDays, forKey: .certificateValidityDays)
    }

    enum CodingKeys: String, CodingKey {
        case productId, name, authType, productSecret, dynamicRegistration, autoCreate, deviceQuota
        case allowClocklessDevices, deviceCount, createdAt, caKeyType, certificateValidityDays
    }
}

struct ProductList: ResponseEncodable {
    var products: [ProductView]
}

struct DeviceView: ResponseEncodable {
    var productId: String
    var deviceName: String
    var status: DeviceStatus
    var createdAt: Date
    var registeredAt: Date?
    var activatedAt: Date?
    var registrationCount: Int

    init(_ device: Device) {
        productId = device.productId
        deviceName = device.name
        status = device.status
        createdAt = device.createdAt
        registeredAt = device.registeredAt
        activatedAt = device.activatedAt
        registrationCount = device.registrationCount
    }
}

struct DeviceList: ResponseEncodable {
    var devices: [DeviceView]
    var nextCursor: String?

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(devices, forKey: .devices)
        try container.encode(nextCursor, forKey: .nextCursor)
    }

    enum CodingKeys: String, CodingKey { case devices, nextCursor }
}

struct EventView: ResponseEncodable {
    var time: Date
    var productId: String
    var deviceName: String
    var outcome: String
    var remoteAddress: String
    var endpoint: String

    init(_ event: RegistrationEvent) {
        time = event.time
        productId = event.productId
        deviceName = event.deviceName
        outcome = event.outcome
        remoteAddress = event.remoteAddress
        endpoint = event.endpoint
    }
}

struct EventList: ResponseEncodable {
    var events: [EventView]
}

struct CertificateView: ResponseEncodable {
    var serial: String
    var deviceName: String
    var fingerprint: String
    var notBefore: Date
    var notAfter: Date
    var issuedAt: Date
    var revokedAt: Date?
    var status: String
    var certificatePem: String

    init(_ certificate: DeviceCertificate) {
        serial = certificate.serial
        deviceName = certificate.deviceName
        fingerprint = certificate.fingerprint
        notBefore = certificate.notBefore
        notAfter = certificate.notAfter
        issuedAt = certificate.issuedAt
        revokedAt = certificate.revokedAt
        status = certificate.revokedAt == nil ? "valid" : "revoked"
        certificatePem = certificate.pem
    }
}

struct CertificateList: ResponseEncodable {
    var certificates: [CertificateView]
}

extension Response {
    static func pem(_ text: String) -> Response {
        Response(
            status: .ok, headers: [.contentType: "application/x-pem-file"],
            body: .init(byteBuffer: ByteBuffer(string: text)))
    }
}
