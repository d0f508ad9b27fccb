import DynRegLoad
import DynRegProtocol
import Testing

private func outcome(_ mode: LoadMode, status: Int = 200, _ body: String) -> String? {
    Array(body.utf8).withUnsafeBytes { mode.outcome(status: status, body: $0) }
}

@Suite("JSON outcome scanner")
struct JSONOutcomeScannerTests {
    @Test(
        "current answers",
        arguments: [
            (#"{"Response":{"Len":53,"Payload":"abc=","RequestId":"r"}}"#, nil),
            (
                #"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"m"},"RequestId":"r"}}"#,
                "AuthFailure.SignatureFailure"
            ),
            (#"{ "Response" : { "Error" : { "Code" : "InvalidParameter" } } }"#, "InvalidParameter"),
            (#"{"Response":{"Error":{"Message":"no code"}}}"#, "InvalidResponse"),
            (#"{"Response":{"Error":{"Code":42}}}"#, "InvalidResponse"),
            (#"{"Response":{"Error":{"Code":"unterminated"#, "InvalidResponse"),
            (#"{"Response":{"RequestId":"r"}}"#, "InvalidResponse"),
            ("", "InvalidResponse"),
        ] as [(String, String?)])
    func current(body: String, expected: String?) {
        #expect(outcome(.current(.hmacSHA256), body) == expected)
    }

    @Test(
        "legacy answers: numeric codes by their v2 names",
        arguments: [
            (#"{"code":0,"message":"success","len":53,"payload":"abc=","requestId":"r"}"#, nil),
            (#"{"code":0,"message":"success"}"#, "InvalidResponse"),
            (#"{"code":1010,"message":"m","requestId":"r"}"#, "AuthFailure.SignatureFailure"),
            (#"{"code" : 1021}"#, "FailedOperation.DeviceAlreadyActivated"),
            (#"{"code":-7}"#, "code -7"),
            (#"{"code":4242}"#, "code 4242"),
            (#"{"code":"1010"}"#, "InvalidResponse"),
            (#"{"message":"no code"}"#, "InvalidResponse"),
            (#"{"code":"#, "InvalidResponse"),
        ] as [(String, String?)])
    func legacy(body: String, expected: String?) {
        #expect(outcome(.legacy, body) == expected)
    }

    @Test("a status other than 200 is the outcome, whatever the body", arguments: [201, 400, 404, 500, 503])
    func status(code: Int) {
        for mode in [LoadMode.health, .legacy, .current(.hmacSHA1)] {
            #expect(outcome(mode, status: code, #"{"Response":{"Payload":"x"}}"#) == "HTTP \(code)")
        }
        #expect(outcome(.health, "anything") == nil)
    }

    @Test("the lookups find the first key and read its value")
    func lookups() {
        let body = Array(#"{"a":"x","code": 12345,"n":-3,"code":9}"#.utf8)
        body.withUnsafeBytes { raw in
            #expect(JSONOutcomeScanner.find(#""code""#, in: raw) == 9)
            #expect(JSONOutcomeScanner.integerValue(of: #""code""#, in: raw) == 12345)
            #expect(JSONOutcomeScanner.integerValue(of: #""n""#, in: raw) == -3)
            #expect(JSONOutcomeScanner.stringValue(of: #""a""#, in: raw) == "x")
            #expect(JSONOutcomeScanner.stringValue(of: #""code""#, in: raw) == nil)
            #expect(JSONOutcomeScanner.find(#""missing""#, in: raw) == nil)
        }
    }
}
