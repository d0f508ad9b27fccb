import Foundation
import Testing

@testable import DynRegServer

/// The EMQX bodies read on bytes decode as `JSONDecoder` decodes them, and what the fast path leaves still decodes.
@Suite("EMQX request bodies")
struct EMQXBodyTests {
    @Test(arguments: [
        #"{"clientid":"P1dev","username":"u","password":"p"}"#,
        #"{"clientid":"P1dev","username":"u","password":"p","peerhost":"10.0.0.1","port":1883,"tls":false}"#,
        #"{"clientid":"P1dev","fingerprint":"ab:cd","certificate":"-----BEGIN\nX\n-----END"}"#,
        #"{"clientid":"P1dev","username":null}"#,
        #"{"clientid":"P1dev","username":7}"#,
        #"{"clientid":"P1dev","extra":{"nested":true}}"#,
        #"{"clientid":"P1d\u00e9v\ud83d\ude00"}"#,
        #"{"username":"u"}"#,
        #"{"clientid":"a","clientid":"b"}"#,
        #"not json"#,
    ])
    func authentication(_ body: String) {
        let expected = try? JSONDecoder().decode(EMQXAuthentication.self, from: Data(body.utf8))
        #expect(EMQXAuthentication.decode(Array(body.utf8)) == expected)
    }

    @Test(arguments: [
        #"{"clientid":"P1dev","username":"u","topic":"P1/dev/data","action":"publish"}"#,
        #"{"clientid":"P1dev","topic":"P1/dev/data","action":"subscribe","qos":1}"#,
        #"{"clientid":"P1dev","topic":"P1/dev/data"}"#,
        #"{"clientid":"P1dev","topic":null,"action":"publish"}"#,
    ])
    func authorization(_ body: String) {
        let expected = try? JSONDecoder().decode(EMQXAuthorization.self, from: Data(body.utf8))
        #expect(EMQXAuthorization.decode(Array(body.utf8)) == expected)
    }
}
