/// A JSON object whose values are all strings, numbers, booleans or `null`, read on bytes: the broker hooks' bodies,
/// which a broker sends on every MQTT CONNECT. `JSONDecoder` cost a login more than the rest of reading its request.
///
/// A fast path, never a dialect of its own: anything it does not read exactly as JSON is read (a nested value, a key
/// given twice, an escape it does not take, bytes that are not UTF-8, anything after the object) gives `nil`,
/// and the caller decodes the body with `JSONDecoder` as before.
package enum FlatJSONObject {
    /// Each key's string value; `.some(nil)` for a key whose value is a number, a boolean or `null`.
    package static func fields(_ bytes: [UInt8]) -> [String: String?]? {
        bytes.withUnsafeBufferPointer { buffer in
            var reader = Reader(bytes: buffer)
            return reader.object()
        }
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func object() -> [String: String?]? {
            skipWhitespace()
            guard take(UInt8(ascii: "{")) else { return nil }
            var fields: [String: String?] = [:]
            skipWhitespace()
            if take(UInt8(ascii: "}")) { return end() ? fields : nil }
            while true {
                skipWhitespace()
                guard let key = string() else { return nil }
                skipWhitespace()
                guard take(UInt8(ascii: ":")) else { return nil }
                skipWhitespace()
                guard let value = scalar(), fields.updateValue(value, forKey: key) == nil else { return nil }
                skipWhitespace()
                if take(UInt8(ascii: ",")) { continue }
                guard take(UInt8(ascii: "}")) else { return nil }
                return end() ? fields : nil
            }
        }

        /// Only white space may follow the object.
        private mutating func end() -> Bool {
            skipWhitespace()
            return index == bytes.count
        }

        /// A string's value, or `.some(nil)` for another scalar; `nil` for anything else.
        private mutating func scalar() -> String?? {
            guard index < bytes.count else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "\""): return string().map { .some($0) }
            case UInt8(ascii: "t"): return literal("true") ? .some(nil) : nil
            case UInt8(ascii: "f"): return literal("false") ? .some(nil) : nil
            case UInt8(ascii: "n"): return literal("null") ? .some(nil) : nil
            case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return number() ? .some(nil) : nil
            default: return nil
            }
        }

        private mutating func string() -> String? {
            guard take(UInt8(ascii: "\"")) else { return nil }
            let start = index
            // Copied only from the first escape on: most strings have none, and are made from the input itself.
            var unescaped: [UInt8]?
            while index < bytes.count {
                let byte = bytes[index]
                index += 1
                switch byte {
                case UInt8(ascii: "\""):
                    guard let unescaped else {
                        return String(
                            validating: UnsafeBufferPointer(rebasing: bytes[start..<index - 1]), as: UTF8.self)
                    }
                    return String(validating: unescaped, as: UTF8.self)
                case UInt8(ascii: "\\"):
                    if unescaped == nil { unescaped = Array(bytes[start..<index - 1]) }
                    guard escape(into: &unescaped!) else { return nil }
                case 0x00..<0x20:
                    // A control character must be escaped.
                    return nil
                default:
                    unescaped?.append(byte)
                }
            }
            return nil
        }

        /// The escape after a backslash, appended to `out`; false for one this reader leaves to JSONDecoder.
        private mutating func escape(into out: inout [UInt8]) -> Bool {
            guard index < bytes.count else { return false }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): out.append(escape)
            case UInt8(ascii: "b"): out.append(0x08)
            case UInt8(ascii: "f"): out.append(0x0C)
            case UInt8(ascii: "n"): out.append(0x0A)
            case UInt8(ascii: "r"): out.append(0x0D)
            case UInt8(ascii: "t"): out.append(0x09)
            case UInt8(ascii: "u"):
                // Surrogates (characters past U+FFFF) are left to JSONDecoder.
                guard let unit = hex4(), !(0xD800...0xDFFF).contains(unit), let scalar = Unicode.Scalar(unit) else {
                    return false
                }
                UTF8.encode(scalar) { out.append($0) }
            default: return false
            }
            return true
        }

        private mutating func hex4() -> UInt32? {
            guard index + 4 <= bytes.count else { return nil }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let byte = bytes[index]
                index += 1
                let digit: UInt8
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
                default: return nil
                }
                value = value << 4 | UInt32(digit)
            }
            return value
        }

        /// JSON's number grammar: `-`, an integer without leading zeros, an optional fraction and exponent.
        private mutating func number() -> Bool {
            _ = take(UInt8(ascii: "-"))
            if take(UInt8(ascii: "0")) {
                // No leading zeros.
            } else if digits() == 0 {
                return false
            }
            if take(UInt8(ascii: ".")), digits() == 0 { return false }
            if take(UInt8(ascii: "e")) || take(UInt8(ascii: "E")) {
                if !take(UInt8(ascii: "+")) { _ = take(UInt8(ascii: "-")) }
                if digits() == 0 { return false }
            }
            return true
        }

        private mutating func digits() -> Int {
            let start = index
            while index < bytes.count, (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(bytes[index]) { index += 1 }
            return index - start
        }

        private mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard index + count <= bytes.count else { return false }
            for offset in 0..<count where bytes[index + offset] != word.utf8Start[offset] { return false }
            index += count
            return true
        }

        private mutating func take(_ byte: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == byte else { return false }
            index += 1
            return true
        }

        private mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }
    }
}
