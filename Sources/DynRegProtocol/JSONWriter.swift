/// A minimal JSON writer for the protocol's fixed shapes.
///
/// Hand-written rather than `JSONEncoder` because the wire format needs a fixed key order and `/` left unescaped
/// (the C SDK's JSON reader does not unescape `\/`), and because it is on every registration's hot path.
struct JSONWriter {
    private(set) var bytes: [UInt8] = []
    /// One entry per open object: whether it already holds a member.
    private var hasMember: [Bool] = []

    init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    mutating func beginObject() {
        bytes.append(UInt8(ascii: "{"))
        hasMember.append(false)
    }

    mutating func endObject() {
        bytes.append(UInt8(ascii: "}"))
        hasMember.removeLast()
    }

    /// Writes `"name":`, preceded by a comma after the first member; a value must follow.
    mutating func key(_ name: String) {
        if hasMember[hasMember.count - 1] {
            bytes.append(UInt8(ascii: ","))
        }
        hasMember[hasMember.count - 1] = true
        writeString(name)
        bytes.append(UInt8(ascii: ":"))
    }

    mutating func field(_ name: String, _ value: String) {
        key(name)
        writeString(value)
    }

    mutating func field(_ name: String, _ value: some BinaryInteger) {
        key(name)
        bytes.append(contentsOf: String(value).utf8)
    }

    /// Copies runs of bytes that need no escape in one go: credentials carry PEM text of a kilobyte or two.
    private mutating func writeString(_ value: String) {
        let quote = UInt8(ascii: "\"")
        let backslash = UInt8(ascii: "\\")
        bytes.append(quote)
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                guard byte < 0x20 || byte == quote || byte == backslash else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                bytes.append(backslash)
                switch byte {
                case quote, backslash: bytes.append(byte)
                case 0x0A: bytes.append(UInt8(ascii: "n"))
                case 0x0D: bytes.append(UInt8(ascii: "r"))
                case 0x09: bytes.append(UInt8(ascii: "t"))
                default:
                    bytes.append(UInt8(ascii: "u"))
                    bytes.append(UInt8(ascii: "0"))
                    bytes.append(UInt8(ascii: "0"))
                    Hex.append(byte, to: &bytes)
                }
                start = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(quote)
    }
}
