import DynRegProtocol
import Foundation
import Testing

@Suite("JSONWriter")
struct JSONWriterTests {
    @Test("objects, arrays of objects and of strings, booleans and integers, with commas only between members")
    func nested() {
        var writer = JSONWriter()
        writer.beginObject()
        writer.field("result", "allow")
        writer.field("ok", false)
        writer.beginArray("acl")
        for topic in ["a/b", "c/\"d\""] {
            writer.beginObject()
            writer.field("topic", topic)
            writer.field("n", -1)
            writer.endObject()
        }
        writer.endArray()
        writer.beginArray("empty")
        writer.endArray()
        writer.beginArray("names")
        writer.element("x")
        writer.element("y\n")
        writer.endArray()
        writer.endObject()
        let text = String(decoding: writer.bytes, as: UTF8.self)
        #expect(
            text
                == #"{"result":"allow","ok":false,"acl":[{"topic":"a/b","n":-1},{"topic":"c/\"d\"","n":-1}],"empty":[],"names":["x","y\n"]}"#
        )
        #expect((try? JSONSerialization.jsonObject(with: Data(writer.bytes))) != nil)
    }
}
