import Foundation

/// Which MQTT topics a device may use: Tencent's default set for the device, a product's own rules, or both.
///
/// Every broker endpoint (EMQX's authorizer and the `acl` of its authentication answer, RabbitMQ's topic check)
/// asks ``TopicRules/allows(_:_:policy:productId:deviceName:separator:)``, so the rules have one reading.
package struct TopicPolicy: Sendable, Hashable, Codable {
    /// Tencent's default topics of the device first; `false`: ``rules`` alone.
    package var includeDefaults: Bool
    package var rules: [TopicRule]

    package init(includeDefaults: Bool = true, rules: [TopicRule] = []) {
        self.includeDefaults = includeDefaults
        self.rules = rules
    }

    package static let `default` = TopicPolicy()
}

/// A topic pattern over `${productId}` and `${deviceName}`, MQTT wildcards allowed, and what it allows.
package struct TopicRule: Sendable, Hashable, Codable {
    package enum Access: String, Sendable, Hashable, Codable, CaseIterable {
        case publish
        case subscribe
        case all

        func allows(_ action: TopicAction) -> Bool { self == .all || rawValue == action.rawValue }
    }

    package var topic: String
    package var access: Access

    package init(_ topic: String, _ access: Access) {
        self.topic = topic
        self.access = access
    }
}

package enum TopicAction: String, Sendable, Hashable, CaseIterable {
    case publish
    case subscribe
}

package enum TopicRules {
    /// Tencent's default topic set of an IoT Hub / IoT Explorer device (sources in docs/brokers.md).
    package static let tencentDefaults: [TopicRule] =
        [
            TopicRule("${productId}/${deviceName}/data", .all),
            TopicRule("${productId}/${deviceName}/event", .publish),
            TopicRule("${productId}/${deviceName}/control", .subscribe),
            TopicRule("$shadow/operation/${productId}/${deviceName}", .publish),
            TopicRule("$shadow/operation/result/${productId}/${deviceName}", .subscribe),
            TopicRule("$ota/report/${productId}/${deviceName}", .publish),
            TopicRule("$ota/update/${productId}/${deviceName}", .subscribe),
        ]
        + ["property", "event", "action", "service"].flatMap { kind in
            [
                TopicRule("$thing/up/\(kind)/${productId}/${deviceName}", .publish),
                TopicRule("$thing/down/\(kind)/${productId}/${deviceName}", .subscribe),
            ]
        }

    /// The `$` roots of Tencent's topics; brokers whose `#` skips `$` topics (EMQX) deny them one by one.
    package static let dollarRoots = [
        "$thing", "$shadow", "$ota", "$sys", "$rrpc", "$broadcast", "$gateway", "$log", "$config", "$resource",
        "$template",
    ]

    /// The rules of `policy` for one device, with the placeholders filled in.
    package static func rules(_ policy: TopicPolicy, productId: String, deviceName: String) -> [TopicRule] {
        ((policy.includeDefaults ? tencentDefaults : []) + policy.rules).map {
            TopicRule(fill($0.topic, productId, deviceName), $0.access)
        }
    }

    /// One pass over the bytes (Foundation's `replacingOccurrences` twice per rule showed in the login profile).
    private static func fill(_ pattern: String, _ productId: String, _ deviceName: String) -> String {
        let bytes = Array(pattern.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count + productId.utf8.count + deviceName.utf8.count)
        var index = 0
        while index < bytes.count {
            if bytes[index] == UInt8(ascii: "$"), index + 1 < bytes.count, bytes[index + 1] == UInt8(ascii: "{") {
                if bytes[index...].starts(with: productIdPlaceholder) {
                    out += productId.utf8
                    index += productIdPlaceholder.count
                    continue
                }
                if bytes[index...].starts(with: deviceNamePlaceholder) {
                    out += deviceName.utf8
                    index += deviceNamePlaceholder.count
                    continue
                }
            }
            out.append(bytes[index])
            index += 1
        }
        return String(decoding: out, as: UTF8.self)
    }

    private static let productIdPlaceholder = Array("${productId}".utf8)
    private static let deviceNamePlaceholder = Array("${deviceName}".utf8)

    /// Whether the device may `action` on `topic`: a topic to publish (no wildcards), or a filter to subscribe to,
    /// allowed only when every topic it can match is allowed. `separator` is `/` for MQTT topics and `.` for
    /// RabbitMQ's routing keys (whose wildcards are `*` and `#`).
    package static func allows(
        _ action: TopicAction, _ topic: String, policy: TopicPolicy, productId: String, deviceName: String,
        separator: Character = "/"
    ) -> Bool {
        let single: Substring = separator == "/" ? "+" : "*"
        let levels = topic.split(separator: separator, omittingEmptySubsequences: false)
        guard isWellFormed(levels, single: single, allowWildcards: action == .subscribe) else { return false }
        return rules(policy, productId: productId, deviceName: deviceName).contains { rule in
            guard rule.access.allows(action) else { return false }
            let pattern = separator == "/" ? rule.topic : routingKey(rule.topic)
            return covers(pattern.split(separator: separator, omittingEmptySubsequences: false), levels, single: single)
        }
    }

    /// A topic pattern in RabbitMQ's routing-key form: `/` → `.`, `+` → `*`.
    package static func routingKey(_ topic: String) -> String {
        topic.split(separator: "/", omittingEmptySubsequences: false)
            .map { $0 == "+" ? "*" : $0 }
            .joined(separator: ".")
    }

    /// An operator's pattern: not empty, within 256 bytes, wildcards only as whole levels and `#` only last.
    package static func isValidPattern(_ pattern: String) -> Bool {
        guard !pattern.isEmpty, pattern.utf8.count <= 256, !pattern.contains("\u{0}") else { return false }
        return isWellFormed(
            pattern.split(separator: "/", omittingEmptySubsequences: false), single: "+", allowWildcards: true)
    }

    private static func isWellFormed(_ levels: [Substring], single: Substring, allowWildcards: Bool) -> Bool {
        for (index, level) in levels.enumerated() {
            let wild = level.contains(single.first!) || level.contains("#")
            guard wild else { continue }
            guard allowWildcards else { return false }
            if level == "#" {
                guard index == levels.count - 1 else { return false }
            } else if level != single {
                return false
            }
        }
        return true
    }

    /// Whether every topic `filter` matches also matches `pattern` (both well formed).
    static func covers(_ pattern: [Substring], _ filter: [Substring], single: Substring) -> Bool {
        var index = 0
        while index < pattern.count {
            let level = pattern[index]
            if level == "#" {
                // `#` matches the parent level too; a `$` topic is never matched by a leading wildcard.
                return !(index == 0 && (filter.first?.hasPrefix("$") ?? false))
            }
            guard index < filter.count else { return false }
            let wanted = filter[index]
            if wanted == "#" { return false }
            if level == single {
                if index == 0 && wanted.hasPrefix("$") { return false }
            } else if wanted == single || wanted != level {
                return false
            }
            index += 1
        }
        return index == filter.count
    }
}
