import Foundation

/// The members an admin JSON object may hold; a member that is itself an object, or an array of objects, may name
/// the shape of those objects too. `nil` for a member: any value, unchecked.
struct JSONShape: Sendable {
    let members: [String: JSONShape?]

    init(_ members: [String: JSONShape?]) { self.members = members }

    /// Only these names, each with any value.
    init(names: [String]) { members = Dictionary(uniqueKeysWithValues: names.map { ($0, nil) }) }
}

extension JSONShape {
    private static let topicRules = JSONShape([
        "includeDefaults": nil, "rules": JSONShape(names: ["topic", "access"]),
    ])
    private static let registrationRate = JSONShape(names: ["perSecond", "burst"])
    /// The members of each body; the Codable types beside them decode the values.
    static let productCreate = JSONShape(
        [
            "name": nil, "authType": nil, "dynamicRegistration": nil, "autoCreate": nil, "deviceQuota": nil,
            "allowClocklessDevices": nil, "caKeyType": nil, "certificateValidityDays": nil, "caCertificatePem": nil,
            "caPrivateKeyPem": nil, "trustedCaCertificatePems": nil, "topicRules": topicRules, "deviceKeyType": nil,
            "registrationRate": registrationRate, "newDevicesPerHour": nil,
        ])
    static let productUpdate = JSONShape(
        [
            "name": nil, "dynamicRegistration": nil, "autoCreate": nil, "deviceQuota": nil,
            "allowClocklessDevices": nil, "trustedCaCertificatePems": nil, "topicRules": topicRules,
            "deviceKeyType": nil, "registrationRate": registrationRate, "newDevicesPerHour": nil,
        ])
    static let deviceCreate = JSONShape(names: ["deviceName"])
}

/// Reads an admin body before it is decoded, so that a typo (`"autocreate": false`) or a repeated key is refused
/// with the name at fault instead of being ignored for the permissive default, or silently taking the last value.
/// It checks keys only; the decoder checks the values.
struct StrictJSON {
    enum Problem: Error, Equatable {
        case unknownField(String)
        case duplicateKey(String)
        case malformed
    }

    private let bytes: [UInt8]
    private var index = 0
    private static let maximumDepth = 32

    private init(_ bytes: [UInt8]) { self.bytes = bytes }

    /// Throws the first problem; the names in it are dotted paths (`topicRules.rules.acess`).
    static func check(_ bytes: [UInt8], shape: JSONShape) throws(Problem) {
        var reader = StrictJSON(bytes)
        reader.skipWhitespace()
        guard reader.peek == UInt8(ascii: "{") else { throw .malformed }
        try reader.value(shape: shape, path: "", depth: 0)
        reader.skipWhitespace()
        guard reader.index == bytes.count else { throw .malformed }
    }

    private var peek: UInt8? { index < bytes.count ? bytes[index] : nil }

    private static func isWhitespace(_ byte: UInt8) -> Bool {
        byte == 0x20 || byte == 0x0A || byte == 0x0D || byte == 0x09
    }

    private mutating func skipWhitespace() {
        while let byte = peek, Self.isWhitespace(byte) { index += 1 }
    }

    private mutating func value(shape: JSONShape?, path: String, depth: Int) throws(Problem) {
        guard depth < Self.maximumDepth else { throw .malformed }
        skipWhitespace()
        switch peek {
        case UInt8(ascii: "{"): try object(shape: shape, path: path, depth: depth)
        case UInt8(ascii: "["): try array(shape: shape, path: path, depth: depth)
        case UInt8(ascii: "\""): _ = try string()
        case nil: throw .malformed
        default:
            // A number or a literal: its validity is the decoder's business.
            while let byte = peek, !Self.ends(byte) { index += 1 }
        }
    }

    private static func ends(_ byte: UInt8) -> Bool {
        byte == UInt8(ascii: ",") || byte == UInt8(ascii: "}") || byte == UInt8(ascii: "]") || isWhitespace(byte)
    }

    private mutating func object(shape: JSONShape?, path: String, depth: Int) throws(Problem) {
        if opensEmpty(closing: UInt8(ascii: "}")) { return }
        var seen = Set<String>()
        while true {
            skipWhitespace()
            guard peek == UInt8(ascii: "\"") else { throw .malformed }
            let key = try string()
            guard seen.insert(key).inserted else { throw .duplicateKey(path + key) }
            var member: JSONShape? = nil
            if let shape {
                guard let known = shape.members[key] else { throw .unknownField(path + key) }
                member = known
            }
            skipWhitespace()
            guard peek == UInt8(ascii: ":") else { throw .malformed }
            index += 1
            try value(shape: member, path: path + key + ".", depth: depth + 1)
            if try closes(with: UInt8(ascii: "}")) { return }
        }
    }

    /// Every element is read with the array's shape: an array of objects names the objects' members.
    private mutating func array(shape: JSONShape?, path: String, depth: Int) throws(Problem) {
        if opensEmpty(closing: UInt8(ascii: "]")) { return }
        while true {
            try value(shape: shape, path: path, depth: depth + 1)
            if try closes(with: UInt8(ascii: "]")) { return }
        }
    }

    /// Past the opening bracket; `true`, and past the closing one too, when nothing is between them.
    private mutating func opensEmpty(closing bracket: UInt8) -> Bool {
        index += 1
        skipWhitespace()
        guard peek == bracket else { return false }
        index += 1
        return true
    }

    /// After a member or an element: `true` past the closing bracket, `false` past a comma.
    private mutating func closes(with bracket: UInt8) throws(Problem) -> Bool {
        skipWhitespace()
        guard let byte = peek, byte == bracket || byte == UInt8(ascii: ",") else { throw .malformed }
        index += 1
        return byte == bracket
    }

    /// A string, unescaped (so `"na\u006de"` is the key `name`).
    private mutating func string() throws(Problem) -> String {
        let start = index
        index += 1
        var escaped = false
        while let byte = peek {
            index += 1
            if escaped {
                escaped = false
            } else if byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                let literal = bytes[start..<index]
                if !literal.contains(UInt8(ascii: "\\")) {
                    return String(decoding: literal.dropFirst().dropLast(), as: UTF8.self)
                }
                guard let text = try? JSONDecoder().decode(String.self, from: Data(literal)) else { throw .malformed }
                return text
            }
        }
        throw .malformed
    }
}
