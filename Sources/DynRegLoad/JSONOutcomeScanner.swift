import DynRegProtocol

/// Byte-level lookups in a small JSON answer: enough to classify it without a JSON decoder, whose cost would
/// be the generator's and not the server's.
package enum JSONOutcomeScanner {
    /// A `/device/register` answer: `nil` for a payload, the `Code` of an `Error`, else `InvalidResponse`.
    package static func currentOutcome(_ body: UnsafeRawBufferPointer) -> String? {
        if find(#""Error""#, in: body) != nil {
            return stringValue(of: #""Code""#, in: body) ?? invalidResponse
        }
        return find(#""Payload""#, in: body) != nil ? nil : invalidResponse
    }

    /// A `/register/dev` answer: `nil` for code 0 with a payload, a numeric code by its v2 name.
    package static func legacyOutcome(_ body: UnsafeRawBufferPointer) -> String? {
        guard let code = integerValue(of: #""code""#, in: body) else { return invalidResponse }
        if code == 0 { return find(#""payload""#, in: body) != nil ? nil : invalidResponse }
        return RegistrationErrorCode.forLegacyCode(code)?.code ?? "code \(code)"
    }

    /// A broker hook's answer (`POST /device/auth`): `nil` for `allow`, `deny` for a refusal.
    package static func authOutcome(_ body: UnsafeRawBufferPointer) -> String? {
        switch stringValue(of: #""result""#, in: body) {
        case "allow": return nil
        case "deny": return "deny"
        default: return invalidResponse
        }
    }

    package static let invalidResponse = "InvalidResponse"

    package static func find(_ needle: StaticString, in haystack: UnsafeRawBufferPointer) -> Int? {
        let count = needle.utf8CodeUnitCount
        guard count > 0, haystack.count >= count else { return nil }
        let first = needle.utf8Start[0]
        var index = 0
        while index <= haystack.count - count {
            if haystack[index] == first {
                var matched = 1
                while matched < count, haystack[index + matched] == needle.utf8Start[matched] { matched += 1 }
                if matched == count { return index }
            }
            index += 1
        }
        return nil
    }

    /// Index of the first byte of the value after `"key":`, white space skipped.
    private static func valueStart(of key: StaticString, in body: UnsafeRawBufferPointer) -> Int? {
        guard var index = find(key, in: body) else { return nil }
        index += key.utf8CodeUnitCount
        while index < body.count, body[index] == UInt8(ascii: " ") { index += 1 }
        guard index < body.count, body[index] == UInt8(ascii: ":") else { return nil }
        index += 1
        while index < body.count, body[index] == UInt8(ascii: " ") { index += 1 }
        return index < body.count ? index : nil
    }

    package static func stringValue(of key: StaticString, in body: UnsafeRawBufferPointer) -> String? {
        guard let start = valueStart(of: key, in: body), body[start] == UInt8(ascii: "\"") else { return nil }
        var end = start + 1
        while end < body.count, body[end] != UInt8(ascii: "\"") { end += 1 }
        guard end < body.count else { return nil }
        return String(decoding: UnsafeRawBufferPointer(rebasing: body[(start + 1)..<end]), as: UTF8.self)
    }

    package static func integerValue(of key: StaticString, in body: UnsafeRawBufferPointer) -> Int? {
        guard var index = valueStart(of: key, in: body) else { return nil }
        let negative = body[index] == UInt8(ascii: "-")
        if negative { index += 1 }
        var value = 0
        var digits = 0
        while index < body.count, body[index] >= UInt8(ascii: "0"), body[index] <= UInt8(ascii: "9"), digits < 18 {
            value = value * 10 + Int(body[index] - UInt8(ascii: "0"))
            index += 1
            digits += 1
        }
        return digits == 0 ? nil : (negative ? -value : value)
    }
}
