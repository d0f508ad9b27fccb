import DynRegStore
import Foundation

// What the templates show: plain strings and flags, formatted here so the templates hold no logic.

private func timeText(_ date: Date?) -> String {
    guard let date else { return "—" }
    return date.formatted(.iso8601.year().month().day().time(includingFractionalSeconds: false))
}

struct ProductRow {
    var id: String
    var name: String
    var authType: String
    var deviceCount: Int
    var quota: String
    var usagePercent: Int
    var dynamicRegistration: Bool
    var autoCreate: Bool
    var createdAt: String

    init(_ product: Product) {
        id = product.id
        name = product.name
        authType = product.authType.rawValue
        deviceCount = product.deviceCount
        quota = product.deviceQuota.map(String.init) ?? "none"
        usagePercent = product.deviceQuota.map { $0 == 0 ? 100 : min(100, product.deviceCount * 100 / $0) } ?? 0
        dynamicRegistration = product.dynamicRegistration
        autoCreate = product.autoCreate
        createdAt = timeText(product.createdAt)
    }
}

struct ProductDetail {
    var product: ProductRow
    var isCertificate: Bool
    var quotaValue: String
    var allowClocklessDevices: Bool
    var secret: String?
    var topicRules: [String]
    var includeDefaultTopics: Bool
    var trustedCAs: Int

    init(_ product: Product, showSecret: Bool) {
        self.product = ProductRow(product)
        isCertificate = product.authType == .certificate
        quotaValue = product.deviceQuota.map(String.init) ?? ""
        allowClocklessDevices = product.allowClocklessDevices
        secret = showSecret ? product.secret : nil
        topicRules = product.topicPolicy.rules.map { "\($0.access.rawValue) \($0.topic)" }
        includeDefaultTopics = product.topicPolicy.includeDefaults
        trustedCAs = product.trustedDeviceCAs.count
    }
}

struct DeviceRow {
    var productId: String
    var name: String
    var path: String
    var status: String
    var createdAt: String
    var registeredAt: String
    var activatedAt: String
    var registrationCount: Int

    init(_ device: Device) {
        productId = device.productId
        name = device.name
        path = "/console/products/\(device.productId)/devices/\(ConsoleRoutes<SQLiteStore>.pathComponent(device.name))"
        status = device.status.rawValue
        createdAt = timeText(device.createdAt)
        registeredAt = timeText(device.registeredAt)
        activatedAt = timeText(device.activatedAt)
        registrationCount = device.registrationCount
    }
}

struct DeviceListing {
    var product: ProductRow
    var devices: [DeviceRow]
    var prefix: String
    var status: String
    var nextCursor: String?
    // Stored, not computed: the templates see stored properties only.
    var none: Bool
    var statuses: [[String: Any]]

    init(product: ProductRow, devices: [DeviceRow], prefix: String, status: String, nextCursor: String?) {
        self.product = product
        self.devices = devices
        self.prefix = prefix
        self.status = status
        self.nextCursor = nextCursor
        none = devices.isEmpty
        statuses =
            [["value": "", "label": "any status", "selected": status.isEmpty]]
            + DeviceStatus.allCases.map {
                ["value": $0.rawValue, "label": $0.rawValue, "selected": status == $0.rawValue]
            }
    }
}

struct CertificateRow {
    var serial: String
    var fingerprint: String
    var notAfter: String
    var status: String
    var isValid: Bool

    init(_ certificate: DeviceCertificate) {
        serial = certificate.serial
        fingerprint = certificate.fingerprint
        notAfter = timeText(certificate.notAfter)
        status = certificate.revokedAt == nil ? "valid" : "revoked"
        isValid = certificate.revokedAt == nil
    }
}

struct DeviceDetail {
    var device: DeviceRow
    var certificates: [CertificateRow]
    var hasCertificates: Bool
}

struct EventRow {
    var time: String
    var productId: String
    var deviceName: String
    var devicePath: String
    var outcome: String
    var success: Bool
    var remoteAddress: String
    var endpoint: String

    init(_ event: RegistrationEvent) {
        time = timeText(event.time)
        productId = event.productId
        deviceName = event.deviceName
        devicePath =
            "/console/products/\(event.productId)/devices/\(ConsoleRoutes<SQLiteStore>.pathComponent(event.deviceName))"
        outcome = event.outcome
        success =
            event.outcome == RegistrationEvent.success || event.outcome == RegistrationEvent.retry
            || event.outcome.hasPrefix("Admin.")
        remoteAddress = event.remoteAddress
        endpoint = event.endpoint
    }
}

/// The overview: registrations per minute over the last hour as an SVG bar chart drawn here, outcomes by code,
/// quota usage per product, recent refusals.
struct ConsoleOverview {
    struct Bar {
        var x: Int
        var y: Int
        var height: Int
        var label: String
    }

    var bars: [Bar]
    var peak: Int
    var total: Int
    var outcomes: [[String: Any]]
    var products: [ProductRow]
    var refusals: [[String: Any]]
    var noRefusals: Bool
    var noOutcomes: Bool

    static let chartHeight = 120

    init(products: [Product], events: [RegistrationEvent], refusals: [RefusalCount], now: Date) {
        let hourAgo = now.addingTimeInterval(-3600)
        // Registrations only: an operator's changes are events too.
        let recent = events.filter { $0.time > hourAgo && !$0.outcome.hasPrefix("Admin.") }
        var perMinute = [Int](repeating: 0, count: 60)
        var outcomes: [String: Int] = [:]
        for event in recent {
            let minute = min(59, max(0, Int(event.time.timeIntervalSince(hourAgo) / 60)))
            perMinute[minute] += 1
            outcomes[event.outcome, default: 0] += 1
        }
        peak = perMinute.max() ?? 0
        total = recent.count
        let scale = Double(Self.chartHeight) / Double(max(peak, 1))
        bars = perMinute.enumerated().map { minute, count in
            let height = Int((Double(count) * scale).rounded())
            return Bar(
                x: minute * 10, y: Self.chartHeight - height, height: height,
                label: "\(60 - minute) min ago: \(count)")
        }
        self.outcomes = outcomes.sorted { $0.value > $1.value }.map {
            ["code": $0.key, "count": $0.value, "success": $0.key == RegistrationEvent.success]
        }
        self.products = products.map(ProductRow.init)
        self.refusals = refusals.prefix(10).map { refusal in
            [
                "minute": timeText(refusal.minute), "productId": refusal.productId.isEmpty ? "-" : refusal.productId,
                "outcome": refusal.outcome, "count": refusal.count, "remoteAddress": refusal.remoteAddress,
            ]
        }
        noRefusals = refusals.isEmpty
        noOutcomes = self.outcomes.isEmpty
    }
}
