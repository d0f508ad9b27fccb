import DynRegStore
import Foundation
import HTTPTypes

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
    var form: ProductSettingsForm
    var secret: String?
    var lockouts: [[String: Any]]
    var noLockouts: Bool

    init(_ product: Product, limits: ProductLimits, lockouts: [Lockout], form: ProductSettingsForm?, showSecret: Bool) {
        self.product = ProductRow(product)
        isCertificate = product.authType == .certificate
        self.form = form ?? ProductSettingsForm(product, limits)
        secret = showSecret ? product.secret : nil
        self.lockouts = lockouts.map {
            [
                "address": $0.remoteAddress, "failures": $0.failures, "lockedAt": timeText($0.lockedAt),
                "lockedUntil": timeText($0.lockedUntil),
            ]
        }
        noLockouts = lockouts.isEmpty
    }
}

/// The product settings form as text: from the product, or as the operator sent it, so that a refused change
/// shows again with everything typed still in it.
struct ProductSettingsForm {
    var name: String
    var deviceQuota: String
    var dynamicRegistration: Bool
    var autoCreate: Bool
    var allowClocklessDevices: Bool
    var ratePerSecond: String
    var rateBurst: String
    var newDevicesPerHour: String
    var includeDefaultTopics: Bool
    /// One `ACCESS TOPIC` a line.
    var topicRules: String
    /// PEM certificates, one after another.
    var trustedCAs: String
    var trustedCACount: Int

    init(_ product: Product, _ limits: ProductLimits) {
        name = product.name
        deviceQuota = product.deviceQuota.map(String.init) ?? ""
        dynamicRegistration = product.dynamicRegistration
        autoCreate = product.autoCreate
        allowClocklessDevices = product.allowClocklessDevices
        ratePerSecond = limits.registrationRate.map { Self.number($0.perSecond) } ?? ""
        rateBurst = limits.registrationRate.map { String($0.burst) } ?? ""
        newDevicesPerHour = limits.newDevicesPerHour.map(String.init) ?? ""
        includeDefaultTopics = product.topicPolicy.includeDefaults
        topicRules = product.topicPolicy.rules.map { "\($0.access.rawValue) \($0.topic)" }.joined(separator: "\n")
        trustedCAs = product.trustedDeviceCAs.joined(separator: "\n")
        trustedCACount = product.trustedDeviceCAs.count
    }

    init(_ form: FormFields, trustedCACount: Int) {
        name = form["name"] ?? ""
        deviceQuota = form["deviceQuota"] ?? ""
        dynamicRegistration = form.isOn("dynamicRegistration")
        autoCreate = form.isOn("autoCreate")
        allowClocklessDevices = form.isOn("allowClocklessDevices")
        ratePerSecond = form["ratePerSecond"] ?? ""
        rateBurst = form["rateBurst"] ?? ""
        newDevicesPerHour = form["newDevicesPerHour"] ?? ""
        includeDefaultTopics = form.isOn("includeDefaultTopics")
        topicRules = form["topicRules"] ?? ""
        trustedCAs = form["trustedCAs"] ?? ""
        self.trustedCACount = trustedCACount
    }

    /// `5`, not `5.0`; `0.5` as it is.
    private static func number(_ value: Double) -> String {
        value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
    }

    /// The change this form asks for, every field set (the form always sends them all); a `ConsoleFailure`
    /// naming the field when one cannot be read. The rules on the values are `ProductAdministration`'s.
    func change(isCertificate: Bool) throws -> (update: ProductUpdate, limits: ProductLimitsInput) {
        var update = ProductUpdate(
            name: name.trimmingCharacters(in: .whitespacesAndNewlines), dynamicRegistration: dynamicRegistration,
            autoCreate: autoCreate, allowClocklessDevices: allowClocklessDevices)
        update.deviceQuota = .some(try Self.wholeNumber(deviceQuota, "The device quota"))
        update.topicPolicy = TopicPolicy(includeDefaults: includeDefaultTopics, rules: try Self.rules(topicRules))
        if isCertificate { update.trustedDeviceCAs = Self.certificates(trustedCAs) }
        var limits = ProductLimitsInput()
        let rate = ratePerSecond.trimmingCharacters(in: .whitespaces)
        let burst = rateBurst.trimmingCharacters(in: .whitespaces)
        switch (rate.isEmpty, burst.isEmpty) {
        case (true, true):
            limits.registrationRate = .some(nil)
        case (false, false):
            guard let perSecond = Double(rate), perSecond.isFinite, let burst = Int(burst) else {
                throw ConsoleFailure(
                    status: .badRequest,
                    message: "The registration rate must be a number a second and the burst a whole number.")
            }
            limits.registrationRate = .some(RegistrationRate(perSecond: perSecond, burst: burst))
        default:
            throw ConsoleFailure(
                status: .badRequest,
                message: "Give both the registration rate and the burst, or neither for the server's default.")
        }
        limits.newDevicesPerHour = .some(try Self.wholeNumber(newDevicesPerHour, "The new-device brake"))
        return (update, limits)
    }

    /// Empty for none.
    private static func wholeNumber(_ text: String, _ field: String) throws -> Int? {
        let text = text.trimmingCharacters(in: .whitespaces)
        guard !text.isEmpty else { return nil }
        guard let value = Int(text), value >= 0 else {
            throw ConsoleFailure(status: .badRequest, message: "\(field) must be a whole number, or empty for none.")
        }
        return value
    }

    private static func rules(_ text: String) throws -> [TopicRule] {
        var rules: [TopicRule] = []
        for (index, line) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let parts = line.split(whereSeparator: \.isWhitespace)
            guard !parts.isEmpty else { continue }
            guard parts.count == 2, let access = TopicRule.Access(rawValue: String(parts[0])) else {
                throw ConsoleFailure(
                    status: .badRequest,
                    message: "Topic rule line \(index + 1): write publish, subscribe or all, a space, then the topic.")
            }
            rules.append(TopicRule(String(parts[1]), access))
        }
        return rules
    }

    /// The PEM blocks of the text area, each up to its END line; what cannot be read is refused by the checks.
    private static func certificates(_ text: String) -> [String] {
        let end = "-----END CERTIFICATE-----"
        var blocks: [String] = []
        var rest = Substring(text)
        while let range = rest.range(of: end) {
            blocks.append(String(rest[..<range.upperBound]).trimmingCharacters(in: .whitespacesAndNewlines))
            rest = rest[range.upperBound...]
        }
        let tail = rest.trimmingCharacters(in: .whitespacesAndNewlines)
        if !tail.isEmpty { blocks.append(tail) }
        return blocks
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

/// The overview: registrations per minute over the last hour as an SVG bar chart drawn here (from the store's
/// per-minute counts), outcomes by code, quota usage per product, recent refusals.
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
    static let minutes = 60

    /// The start of the chart's first minute: 59 whole minutes before the current one.
    static func chartStart(now: Date) -> Date {
        let minute = (now.timeIntervalSince1970 / 60).rounded(.down)
        return Date(timeIntervalSince1970: (minute - Double(minutes - 1)) * 60)
    }

    init(products: [Product], counts: [OutcomeMinute], since: Date, refusals: [RefusalCount]) {
        var perMinute = [Int](repeating: 0, count: Self.minutes)
        var outcomes: [String: Int] = [:]
        for count in counts {
            let minute = Int((count.minute.timeIntervalSince(since) / 60).rounded(.down))
            guard (0..<Self.minutes).contains(minute) else { continue }
            perMinute[minute] += count.count
            outcomes[count.outcome, default: 0] += count.count
        }
        peak = perMinute.max() ?? 0
        total = perMinute.reduce(0, +)
        let scale = Double(Self.chartHeight) / Double(max(peak, 1))
        bars = perMinute.enumerated().map { minute, count in
            let height = Int((Double(count) * scale).rounded())
            let start = since.addingTimeInterval(TimeInterval(minute * 60))
            return Bar(
                x: minute * 10, y: Self.chartHeight - height, height: height,
                label: "\(start.formatted(.iso8601.time(includingFractionalSeconds: false))) UTC: \(count)")
        }
        self.outcomes = outcomes.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.map {
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
