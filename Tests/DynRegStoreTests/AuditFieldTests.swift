import DynRegStore
import Testing

@Suite("Audit fields")
struct AuditFieldTests {
    @Test("valid product ids and device names are kept as they are")
    func validNamesUnchanged() {
        for name in ["AA:BB:CC:00:11:22", "dev-1.a_b@c", String(repeating: "x", count: 48), "ABCDEFGHIJ"] {
            #expect(AuditField.bounded(name) == name)
        }
    }

    @Test("anything else is escaped per UTF-8 byte and cut to 64 bytes, however many bytes a Character holds")
    func boundedInBytes() {
        let combining = "a" + String(repeating: "\u{301}", count: 980)  // one Character, about 2 KB
        #expect(combining.count == 1)
        let stored = AuditField.bounded(combining)
        #expect(stored.utf8.count <= 64)
        #expect(stored.hasPrefix(#"a\xcc\x81"#))
        #expect(AuditField.bounded("x\u{1b}[2J\\") == #"x\x1b[2J\\"#)
        #expect(AuditField.bounded(String(repeating: "\u{1b}", count: 100)).utf8.count == 64)
        // An escape is never cut in half.
        #expect(AuditField.bounded(String(repeating: "b", count: 62) + "\u{1b}") == String(repeating: "b", count: 62))
        #expect(AuditField.bounded("").isEmpty)
    }
}
