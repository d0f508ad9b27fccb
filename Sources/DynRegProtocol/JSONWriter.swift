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

    private static let hexDigits: [UInt8] = Array("0123456789abcdef".utf8)

    private mutating func writeString(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 {
            switch byte {
            case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
            case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
            case 0x0A: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "n")])
            case 0x0D: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "r")])
            case 0x09: bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "t")])
            case 0x00..<0x20:
                bytes.append(contentsOf: Array("\\u00".utf8))
                bytes.append(Self.hexDigits[Int(byte >> 4)])
                bytes.append(Self.hexDigits[Int(byte & 0x0F)])
            default: bytes.append(byte)
            }
        }
        bytes.append(UInt8(ascii: "\""))
    }
}
