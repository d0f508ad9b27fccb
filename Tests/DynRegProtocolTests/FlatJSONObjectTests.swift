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

    /// Keys and values it reads, and values it leaves to Foundation (valid JSON or not).
    static let keys = [#""clientid""#, #""username""#, #""a""#, #""""#, #""x\"y""#, #""\u00e9t\u00e9""#, #""😀""#]
    static let values = [
        #""v""#, #""""#, #""x\"y\\z""#, #""\/""#, #""\n\t\r\b\f""#, #""\u0000""#, #""é😀""#, "1", "-0", "0.5",
        "1e3", "-1E-2", "true", "false", "null",
    ]
    static let leftValues = [
        #""\ud83d\ude00""#, #""\ud800""#, #""\x""#, "01", "1.", "-", "nul", "[]", "{}", "\"\u{01}\"", #""open"#,
    ]
    static let blanks = ["", " ", "\n", "\t ", "\r\n"]

    @Test("what it reads, Foundation reads the same; objects it must read, it reads")
    func agreesWithFoundation() async {
        let pair = PropertyBased.zip(
            Gen.int(in: 0..<Self.keys.count), Gen.int(in: 0..<(Self.values.count + Self.leftValues.count)),
            Gen.int(in: 0..<Self.blanks.count))
        await propertyCheck(count: 3000, input: pair.array(of: 0...6)) { pairs in
            let members = pairs.map { key, value, blank in
                let text = value < Self.values.count ? Self.values[value] : Self.leftValues[value - Self.values.count]
                return Self.keys[key] + Self.blanks[blank] + ":" + Self.blanks[blank] + text
            }
            let bytes = Array(("{" + members.joined(separator: ",") + "}").utf8)
            let fast = FlatJSONObject.fields(bytes)
            if let fast {
                #expect(Self.foundation(bytes) == fast, "\(String(decoding: bytes, as: UTF8.self))")
            }
            let distinct = Set(pairs.map(\.0)).count == pairs.count
            if distinct && pairs.allSatisfy({ $0.1 < Self.values.count }) {
                #expect(fast != nil, "a flat object of plain values: \(String(decoding: bytes, as: UTF8.self))")
            }
        }
    }

    @Test("random JSON-shaped bytes never trap, and what it reads Foundation reads the same")
    func jsonShapedBytes() async {
        let fragments = ["{", "}", ":", ",", " "] + Self.keys + Self.values + Self.leftValues
        await propertyCheck(count: 2000, input: Gen.element(of: fragments).array(of: 0...14)) { parts in
            let bytes = Array(parts.compactMap { $0 }.joined().utf8)
            if let fast = FlatJSONObject.fields(bytes) { #expect(Self.foundation(bytes) == fast) }
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
    }

    @Test func bytesThatAreNotUTF8AreLeftToFoundation() {
        // {"a":"\xFF"} and the same in a key.
        #expect(FlatJSONObject.fields([0x7B, 0x22, 0x61, 0x22, 0x3A, 0x22, 0xFF, 0x22, 0x7D]) == nil)
        #expect(FlatJSONObject.fields([0x7B, 0x22, 0xC3, 0x22, 0x3A, 0x22, 0x61, 0x22, 0x7D]) == nil)
    }
}
