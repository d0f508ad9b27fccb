import DynRegProtocol
import Foundation
import PropertyBased
import Testing

/// `FlatJSONObject` is a fast path in front of Foundation's JSON reader: whatever it reads, it must read as
/// `JSONSerialization` does; whatever it leaves (`nil`), the caller reads the slow way.
@Suite("Flat JSON objects read on bytes")
struct FlatJSONObjectTests {
    /// What JSONSerialization makes of `bytes` in FlatJSONObject's terms: strings, `.some(nil)` for other scalars;
    /// `nil` if it is not an object of scalars.
    static func foundation(_ bytes: [UInt8]) -> [String: String?]? {
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes), options: [.fragmentsAllowed]),
            let dictionary = object as? [String: Any]
        else { return nil }
        var fields: [String: String?] = [:]
        for (key, value) in dictionary {
            switch value {
            case let string as String: fields[key] = .some(string)
            case is NSNumber, is NSNull: fields[key] = .some(nil)
            default: return nil
            }
        }
        return fields
    }

    @Test("what it reads, Foundation reads the same; random JSON-shaped input")
    func agreesWithFoundation() async {
        let fragments = [
            "{", "}", "{", "}", ":", ":", ",", ",", " ", "\n", "\"clientid\"", "\"username\"", "\"a\"", "\"\"",
            "\"x\\\"y\"", "\"\\\\\"", "\"\\/\"", "\"\\n\\t\\r\\b\\f\"", "\"\\u00e9\"", "\"\\u0000\"",
            "\"\\ud83d\\ude00\"",
            "\"\\ud800\"", "\"\\x\"", "\"é😀\"", "1", "-0", "0.5", "1e3", "-1E-2", "01", "1.", "-", "true", "false",
            "null", "nul", "[", "]", "\"\u{01}\"",
        ]
        await propertyCheck(count: 3000, input: Gen.element(of: fragments).array(of: 0...14)) { parts in
            let bytes = Array(parts.compactMap { $0 }.joined().utf8)
            if let fast = FlatJSONObject.fields(bytes) {
                #expect(Self.foundation(bytes) == fast, "\(String(decoding: bytes, as: UTF8.self))")
            }
        }
    }

    @Test("any object of strings that JSONEncoder writes is read back exactly")
    func readsWhatJSONEncoderWrites() async throws {
        let text = Gen.unicodeScalar(in: "\u{0}"..."\u{2FF}").map(Character.init).string(of: 0...40)
        await propertyCheck(count: 500, input: text, text, text) { key, value, other in
            let object = [key: value, key + "2": other, "clientid": value + "/"]
            let bytes = Array(try JSONEncoder().encode(object))
            let fields = try #require(FlatJSONObject.fields(bytes))
            #expect(fields == object.mapValues { .some($0) })
        }
    }

    @Test("an EMQX body as the documented configuration sends it takes the fast path")
    func emqxBody() throws {
        let body =
            #"{"clientid":"ABCDEFGHIJdev-1","username":"ABCDEFGHIJdev-1;12010126;abcd1;1900000000","password":"0a1b;hmacsha256","peerhost":"10.0.0.7","port":1883,"tls":false,"cert":null}"#
        let fields = try #require(FlatJSONObject.fields(Array(body.utf8)))
        #expect(fields["clientid"] == .some("ABCDEFGHIJdev-1"))
        #expect(fields["port"] == .some(nil))
        #expect(fields["cert"] == .some(nil))
        #expect(fields["missing"] == nil)
    }

    @Test(
        "left to Foundation: nested values, repeated keys, surrogates, invalid UTF-8, anything after the object",
        arguments: [
            #"{"a":{"b":"c"}}"#, #"{"a":["b"]}"#, #"{"a":"1","a":"2"}"#, #"{"a":"\ud83d\ude00"}"#, #"{"a":"b"} x"#,
            #"{"a":"b",}"#, #"["a"]"#, #""a""#, "", #"{"a":"b""#, #"{"a":01}"#, #"{"a":"\q"}"#,
        ])
    func leftToFoundation(_ text: String) {
        #expect(FlatJSONObject.fields(Array(text.utf8)) == nil)
        #expect(FlatJSONObject.fields([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D]) == nil)
    }
}
