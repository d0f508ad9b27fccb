package import Foundation
import SwiftASN1

/// PEM text: read with SwiftASN1's `PEMDocument`, written by hand.
///
/// The writer produces, byte for byte, what `PEMDocument.pemString` does (64-character lines, `\n`, no final line
/// break; a test compares the two). `pemString` finds each line's end with `Substring.count`, which walks the rest of
/// the text, so its cost grows with the square of the document: it showed in the profile of certificate
/// registrations (two PEM documents per device), and for a CRL (issue 17) it took 3.4 s at 100 kB DER (about 2,500
/// revoked serials) and 17 s at 200 kB, where this writer is linear.
package enum PEM {
    package static func encode(type: String, der: some DataProtocol) -> String {
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

    /// The DER bytes of the first PEM document in `text`, of any type; `nil` when there is none or it is malformed.
    ///
    /// Whitespace around each line is ignored, as servers that indent a forwarded certificate (nginx's
    /// `$ssl_client_cert` starts continuation lines with a tab) need; otherwise the text must be strict PEM.
    package static func firstDocumentDER(in text: String) -> [UInt8]? {
        let lines = text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }
        let normalized = lines.filter { !$0.isEmpty }.joined(separator: "\n")
        return (try? PEMDocument.parseMultiple(pemString: normalized))?.first?.derBytes
    }
}
