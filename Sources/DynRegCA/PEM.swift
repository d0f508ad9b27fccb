import Foundation

/// PEM text, byte for byte as SwiftASN1's `PEMDocument.pemString` writes it (64-character lines, `\n`, no final
/// line break), built on bytes: SwiftASN1 splits the Base64 with String indices, which showed in the profile of
/// certificate registrations (two PEM documents per device).
public enum PEM {
    public static func encode(type: String, der: some DataProtocol) -> String {
        let base64 = Array(Data(der).base64EncodedString().utf8)
        var text: [UInt8] = []
        text.reserveCapacity(base64.count + base64.count / 64 + 2 * type.utf8.count + 32)
        text += "-----BEGIN \(type)-----".utf8
        var start = 0
        while start < base64.count {
            let end = min(start + 64, base64.count)
            text.append(0x0A)
            text += base64[start..<end]
            start = end
        }
        text.append(0x0A)
        text += "-----END \(type)-----".utf8
        return String(decoding: text, as: UTF8.self)
    }
}
