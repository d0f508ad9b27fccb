/// Lower-case hexadecimal through a lookup table: `String(format:)` costs twenty times the HMAC it encodes.
/// The one hex encoder of every dynreg target.
package enum Hex {
    private static let digits: [UInt8] = Array("0123456789abcdef".utf8)

    package static func lowercase<Bytes: Sequence>(_ bytes: Bytes) -> String where Bytes.Element == UInt8 {
        String(decoding: lowercaseBytes(bytes), as: UTF8.self)
    }

    package static func lowercaseBytes<Bytes: Sequence>(_ bytes: Bytes) -> [UInt8] where Bytes.Element == UInt8 {
        var out: [UInt8] = []
        out.reserveCapacity(bytes.underestimatedCount * 2)
        for byte in bytes { append(byte, to: &out) }
        return out
    }

    /// Appends the two digits of `byte`.
    @inline(__always)
    package static func append(_ byte: UInt8, to out: inout [UInt8]) {
        out.append(digits[Int(byte >> 4)])
        out.append(digits[Int(byte & 0x0F)])
    }
}

/// Compares two byte sequences in time that depends only on their lengths.
public func constantTimeEquals<A: Collection, B: Collection>(_ lhs: A, _ rhs: B) -> Bool
where A.Element == UInt8, B.Element == UInt8 {
    guard lhs.count == rhs.count else { return false }
    var difference: UInt8 = 0
    for (left, right) in zip(lhs, rhs) {
        difference |= left ^ right
    }
    return difference == 0
}
