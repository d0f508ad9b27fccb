import DynRegStore
import Testing

@Suite struct TopicRulesTests {
    static let p = "PROD123456"
    static let d = "dev-1"

    static func allows(
        _ action: TopicAction, _ topic: String, _ policy: TopicPolicy = .default, device: String = d,
        separator: Character = "/"
    ) -> Bool {
        TopicRules.allows(action, topic, policy: policy, productId: p, deviceName: device, separator: separator)
    }

    @Test("Tencent's default topics, each in its direction only")
    func defaults() {
        let published = [
            "\(Self.p)/\(Self.d)/data", "\(Self.p)/\(Self.d)/event", "$shadow/operation/\(Self.p)/\(Self.d)",
            "$ota/report/\(Self.p)/\(Self.d)", "$thing/up/property/\(Self.p)/\(Self.d)",
            "$thing/up/event/\(Self.p)/\(Self.d)", "$thing/up/action/\(Self.p)/\(Self.d)",
            "$thing/up/service/\(Self.p)/\(Self.d)",
        ]
        let subscribed = [
            "\(Self.p)/\(Self.d)/data", "\(Self.p)/\(Self.d)/control", "$shadow/operation/result/\(Self.p)/\(Self.d)",
            "$ota/update/\(Self.p)/\(Self.d)", "$thing/down/property/\(Self.p)/\(Self.d)",
            "$thing/down/event/\(Self.p)/\(Self.d)", "$thing/down/action/\(Self.p)/\(Self.d)",
            "$thing/down/service/\(Self.p)/\(Self.d)",
        ]
        for topic in published { #expect(Self.allows(.publish, topic), "\(topic)") }
        for topic in subscribed { #expect(Self.allows(.subscribe, topic), "\(topic)") }
        for topic in published where !subscribed.contains(topic) { #expect(!Self.allows(.subscribe, topic)) }
        for topic in subscribed where !published.contains(topic) { #expect(!Self.allows(.publish, topic)) }
    }

    @Test("another device's topics, another product's, look-alikes and malformed topics are refused")
    func othersAreRefused() {
        for topic in [
            "\(Self.p)/dev-2/data", "OTHER12345/\(Self.d)/data", "$thing/up/property/\(Self.p)/dev-2",
            "\(Self.p)/\(Self.d)/data/more", "\(Self.p)/\(Self.d)", "\(Self.p)/\(Self.d)/dat", "",
            "\(Self.p)/\(Self.d)/+", "\(Self.p)/+/data", "#",
        ] {
            #expect(!Self.allows(.publish, topic), "\(topic)")
        }
    }

    @Test("a wildcard subscription only when every topic it matches is allowed")
    func wildcards() {
        for filter in [
            "\(Self.p)/+/data", "\(Self.p)/\(Self.d)/+", "\(Self.p)/#", "#", "+/\(Self.d)/data",
            "$thing/down/+/\(Self.p)/\(Self.d)", "\(Self.p)/\(Self.d)/#", "\(Self.p)/\(Self.d)/da#",
        ] {
            #expect(!Self.allows(.subscribe, filter), "\(filter)")
        }
        let own = TopicPolicy(rules: [TopicRule("${productId}/${deviceName}/custom/#", .all)])
        #expect(Self.allows(.subscribe, "\(Self.p)/\(Self.d)/custom/#", own))
        #expect(Self.allows(.subscribe, "\(Self.p)/\(Self.d)/custom/+/x", own))
        #expect(Self.allows(.subscribe, "\(Self.p)/\(Self.d)/custom", own))  // `#` matches its parent level
        #expect(Self.allows(.publish, "\(Self.p)/\(Self.d)/custom/a/b", own))
        #expect(!Self.allows(.subscribe, "\(Self.p)/\(Self.d)/+/x", own))
        #expect(!Self.allows(.publish, "\(Self.p)/dev-2/custom/a", own))
        // A leading wildcard never matches `$` topics.
        let everything = TopicPolicy(includeDefaults: false, rules: [TopicRule("#", .subscribe)])
        #expect(Self.allows(.subscribe, "a/b", everything))
        #expect(!Self.allows(.subscribe, "$thing/down/property/\(Self.p)/\(Self.d)", everything))
    }

    @Test("a product's rules extend the defaults, or replace them")
    func productRules() {
        let extended = TopicPolicy(rules: [TopicRule("fleet/${deviceName}/telemetry", .publish)])
        #expect(Self.allows(.publish, "fleet/\(Self.d)/telemetry", extended))
        #expect(Self.allows(.publish, "\(Self.p)/\(Self.d)/data", extended))
        let replaced = TopicPolicy(includeDefaults: false, rules: extended.rules)
        #expect(Self.allows(.publish, "fleet/\(Self.d)/telemetry", replaced))
        #expect(!Self.allows(.publish, "\(Self.p)/\(Self.d)/data", replaced))
        #expect(!Self.allows(.subscribe, "fleet/\(Self.d)/telemetry", replaced))
    }

    @Test("RabbitMQ routing keys: compared in routing-key form, so a device name with a dot keeps its topics")
    func routingKeys() {
        #expect(Self.allows(.publish, "$thing.up.property.\(Self.p).dev.1", device: "dev.1", separator: "."))
        #expect(Self.allows(.subscribe, "\(Self.p).dev.1.control", device: "dev.1", separator: "."))
        #expect(!Self.allows(.subscribe, "\(Self.p).*.control", device: "dev.1", separator: "."))
        #expect(!Self.allows(.publish, "\(Self.p).dev-2.data", separator: "."))
        #expect(TopicRules.routingKey("a/+/b/#") == "a.*.b.#")
    }

    @Test("operator patterns: wildcards only as whole levels, # last")
    func patterns() {
        #expect(TopicRules.isValidPattern("${productId}/${deviceName}/x/#"))
        #expect(TopicRules.isValidPattern("a/+/b"))
        for bad in ["", "a/#/b", "a/b#", "a/+b", String(repeating: "a", count: 257)] {
            #expect(!TopicRules.isValidPattern(bad), "\(bad)")
        }
    }
}
