import DynRegProtocol
import DynRegStore
import Synchronization

/// EMQX's answers to the logins it lets in, kept per product: the answer is the same for every device of a product
/// but for the device name in its topics, so the thirty-odd rules are written once per topic policy and each login
/// only splices its name in (filling and writing them for every login was a tenth of the login's time).
final class EMQXAnswers: Sendable {
    /// One product's answer, cut where the device name goes.
    struct Template: Sendable {
        let productId: String
        let policy: TopicPolicy
        /// The answer without `expire_at`, split at each device name.
        private let pieces: [[UInt8]]
        /// Where `"expire_at":N,` goes in the first piece.
        private let expireAtOffset: Int

        /// `nil` when the product's own rules hold the byte that marks the device name, or a backslash (whose
        /// escape could end in what looks like the mark's).
        init?(productId: String, policy: TopicPolicy) {
            let mark = "\u{1}"
            let marked = { (text: String) in text.contains(mark) || text.contains("\\") }
            guard !policy.rules.contains(where: { marked($0.topic) }), !marked(productId) else { return nil }
            let whole = BrokerRoutesAnswers.emqxAllow(
                TopicRules.rules(policy, productId: productId, deviceName: mark), expireAt: nil)
            let escapedMark = Array(#"\u0001"#.utf8)
            var pieces: [[UInt8]] = []
            var start = 0
            var index = 0
            while index + escapedMark.count <= whole.count {
                if whole[index..<index + escapedMark.count].elementsEqual(escapedMark) {
                    pieces.append(Array(whole[start..<index]))
                    index += escapedMark.count
                    start = index
                } else {
                    index += 1
                }
            }
            pieces.append(Array(whole[start...]))
            guard let acl = Self.offset(of: Array(#""acl":"#.utf8), in: pieces[0]) else { return nil }
            self.productId = productId
            self.policy = policy
            self.pieces = pieces
            self.expireAtOffset = acl
        }

        /// The answer for `deviceName`, or `nil` for a name whose bytes JSON would escape (a stored device's never
        /// do: ``DeviceNameRules``).
        func answer(deviceName: String, expireAt: Int64?) -> [UInt8]? {
            guard DeviceNameRules.isValid(deviceName) else { return nil }
            let name = deviceName.utf8
            var bytes: [UInt8] = []
            bytes.reserveCapacity(pieces.reduce(0) { $0 + $1.count } + (pieces.count - 1) * name.count + 32)
            let first = pieces[0]
            if let expireAt {
                bytes += first[..<expireAtOffset]
                bytes += #""expire_at":"#.utf8
                bytes += String(expireAt).utf8
                bytes.append(UInt8(ascii: ","))
                bytes += first[expireAtOffset...]
            } else {
                bytes += first
            }
            for piece in pieces.dropFirst() {
                bytes += name
                bytes += piece
            }
            return bytes
        }

        private static func offset(of needle: [UInt8], in haystack: [UInt8]) -> Int? {
            guard haystack.count >= needle.count else { return nil }
            for index in 0...(haystack.count - needle.count)
            where haystack[index..<index + needle.count].elementsEqual(needle) {
                return index
            }
            return nil
        }
    }

    private let templates = Mutex<[String: Template]>([:])
    /// Products are few; a bound keeps a stream of product ids from growing it.
    private let limit: Int

    init(limit: Int = 1024) { self.limit = limit }

    /// How many products' templates it holds.
    var count: Int { templates.withLock { $0.count } }

    /// The answer letting `deviceName` of `product` in: from the product's template while its topic policy is the
    /// one the template was written for.
    func allow(productId: String, policy: TopicPolicy, deviceName: String, expireAt: Int64?) -> [UInt8] {
        if let template = templates.withLock({ $0[productId] }), template.policy == policy,
            let bytes = template.answer(deviceName: deviceName, expireAt: expireAt)
        {
            return bytes
        }
        if let template = Template(productId: productId, policy: policy),
            let bytes = template.answer(deviceName: deviceName, expireAt: expireAt)
        {
            templates.withLock { templates in
                if templates.count >= limit, templates[productId] == nil { templates.removeAll() }
                templates[productId] = template
            }
            return bytes
        }
        return BrokerRoutesAnswers.emqxAllow(
            TopicRules.rules(policy, productId: productId, deviceName: deviceName), expireAt: expireAt)
    }
}

/// The EMQX answer as written rule by rule: what ``EMQXAnswers`` templates are cut from, and must equal.
enum BrokerRoutesAnswers {
    /// `{"result":"allow","is_superuser":false,"expire_at":N,"acl":[…]}`: the device's rules, then a deny of each
    /// `$` root (EMQX's `#` does not match `$` topics) and of `#`. Written directly, not with JSONEncoder: EMQX
    /// asks on every MQTT CONNECT, and encoding the thirty-odd rules took half of a login's time.
    static func emqxAllow(_ rules: [TopicRule], expireAt: Int64?) -> [UInt8] {
        var writer = JSONWriter(capacity: 3072)
        writer.beginObject()
        writer.field("result", "allow")
        writer.field("is_superuser", false)
        if let expireAt { writer.field("expire_at", expireAt) }
        writer.beginArray("acl")
        func rule(_ permission: String, _ action: String, _ topic: String) {
            writer.beginObject()
            writer.field("permission", permission)
            writer.field("action", action)
            writer.field("topic", topic)
            writer.endObject()
        }
        for allowed in rules { rule("allow", allowed.access.rawValue, allowed.topic) }
        for root in TopicRules.dollarRoots { rule("deny", "all", root + "/#") }
        rule("deny", "all", "#")
        writer.endArray()
        writer.endObject()
        return writer.bytes
    }
}
