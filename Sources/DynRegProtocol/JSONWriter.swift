/// A minimal JSON writer for the protocol's fixed shapes.
///
/// Hand-written rather than `JSONEncoder` because the wire format needs a fixed key order and `/` left unescaped
/// (the C SDK's JSON reader does not unescape `\/`), and because it is on every registration's hot path.
package struct JSONWriter {
    package private(set) var bytes: [UInt8] = []
    /// One entry per open object or array: whether it is an array, and whether it already holds a member.
    private var containers: [(isArray: Bool, hasMember: Bool)] = []

    package init(capacity: Int = 256) {
        bytes.reserveCapacity(capacity)
    }

    /// An object: the whole document, a member's value after ``key(_:)``, or an element of an open array.
    package mutating func beginObject() {
        separateElement()
        push(UInt8(ascii: "{"), isArray: false)
    }

    package mutating func endObject() { pop(UInt8(ascii: "}")) }

    /// `"name":[`; elements follow (``beginObject()`` or ``element(_:)``), then ``endArray()``.
    package mutating func beginArray(_ name: String) {
        key(name)
        push(UInt8(ascii: "["), isArray: true)
    }

    package mutating func endArray() { pop(UInt8(ascii: "]")) }

    private mutating func push(_ bracket: UInt8, isArray: Bool) {
        bytes.append(bracket)
        containers.append((isArray, false))
    }

    private mutating func pop(_ bracket: UInt8) {
        bytes.append(bracket)
        containers.removeLast()
    }

    /// A string element of the open array.
    package mutating func element(_ value: String) {
        separateElement()
        writeString(value)
    }

    private mutating func separateElement() {
        guard let top = containers.last, top.isArray else { return }
        if top.hasMember { bytes.append(UInt8(ascii: ",")) }
        containers[containers.count - 1].hasMember = true
    }

    /// Writes `"name":`, preceded by a comma after the first member; a value must follow.
    package mutating func key(_ name: String) {
        if containers[containers.count - 1].hasMember {
            bytes.append(UInt8(ascii: ","))
        }
        containers[containers.count - 1].hasMember = true
        writeString(name)
        bytes.append(UInt8(ascii: ":"))
    }

    package mutating func field(_ name: String, _ value: Bool) {
        key(name)
        bytes.append(contentsOf: (value ? "true" : "false").utf8)
    }

    package mutating func field(_ name: String, _ value: String) {
        key(name)
        writeString(value)
    }

    package mutating func field(_ name: String, _ value: some BinaryInteger) {
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
