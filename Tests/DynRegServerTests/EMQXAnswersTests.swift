import DynRegStore
import Testing

@testable import DynRegServer

@Suite struct EMQXAnswersTests {
    private static let policies: [TopicPolicy] = [
        .default,
        TopicPolicy(includeDefaults: false, rules: []),
        TopicPolicy(
            includeDefaults: true,
            rules: [
                TopicRule("fleet/${deviceName}/${deviceName}/#", .all), TopicRule("${productId}/+/status", .subscribe),
                TopicRule("broadcast", .publish),
            ]),
        // A backslash and the marking byte: no template, the answer is written rule by rule.
        TopicPolicy(includeDefaults: false, rules: [TopicRule(#"odd\u0001/${deviceName}"#, .all)]),
        TopicPolicy(includeDefaults: false, rules: [TopicRule("odd\u{1}/${deviceName}", .all)]),
    ]

    /// The spliced answer is byte for byte the one written rule by rule, for every policy, name and expiry.
    @Test(arguments: policies)
    func theSplicedAnswerIsTheWrittenOne(policy: TopicPolicy) {
        let answers = EMQXAnswers()
        for name in ["d", "dev-0001", "a.b:c@d_e-f", String(repeating: "x", count: 48)] {
            for expireAt: Int64? in [nil, 0, 1_764_000_000] {
                let written = BrokerRoutesAnswers.emqxAllow(
                    TopicRules.rules(policy, productId: "ABCDEFGHIJ", deviceName: name), expireAt: expireAt)
                // Twice: once building the template, once from it.
                for _ in 0..<2 {
                    let spliced = answers.allow(
                        productId: "ABCDEFGHIJ", policy: policy, deviceName: name, expireAt: expireAt)
                    #expect(String(decoding: spliced, as: UTF8.self) == String(decoding: written, as: UTF8.self))
                }
            }
        }
    }

    /// A product whose rules change gets answers from its new rules at once.
    @Test func aChangedPolicyIsNotAnsweredFromTheOldTemplate() {
        let answers = EMQXAnswers()
        let before = TopicPolicy(includeDefaults: false, rules: [TopicRule("old/${deviceName}", .all)])
        let after = TopicPolicy(includeDefaults: false, rules: [TopicRule("new/${deviceName}", .all)])
        _ = answers.allow(productId: "ABCDEFGHIJ", policy: before, deviceName: "d", expireAt: nil)
        let answer = String(
            decoding: answers.allow(productId: "ABCDEFGHIJ", policy: after, deviceName: "d", expireAt: nil),
            as: UTF8.self)
        #expect(answer.contains(#""topic":"new/d""#))
        #expect(!answer.contains("old/"))
    }

    @Test func aStreamOfProductsStaysBounded() {
        let answers = EMQXAnswers(limit: 4)
        for index in 0..<100 {
            _ = answers.allow(productId: "P\(index)", policy: .default, deviceName: "d", expireAt: nil)
        }
        #expect(answers.count <= 4)
    }
}
