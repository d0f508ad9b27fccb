import DynRegServer
import DynRegStore
import Foundation
import NIOHTTP1
import Testing

/// The admin JSON against the shared views, over HTTP to a real server: what the server sends decodes into the
/// view `dynreg` reads and encodes back to the same JSON, so no field is lost or renamed on the way.
@Suite("Admin API views and path decoding")
struct AdminViewTests {
    static func sortedJSON(_ bytes: some Sequence<UInt8>) throws -> String {
        let object = try JSONSerialization.jsonObject(with: Data(bytes))
        let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .withoutEscapingSlashes])
        return String(decoding: data, as: UTF8.self)
    }

    /// Decodes `answer` as `View`, re-encodes it as the server does and expects the same JSON.
    @discardableResult
    static func roundTrip<View: Codable>(_ answer: TestServer.Answer, as view: View.Type) throws -> View {
        let decoder = JSONDecoder()
        decoder.dateDecodingStrategy = .iso8601
        let decoded = try decoder.decode(View.self, from: Data(answer.body))
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .iso8601
        #expect(try sortedJSON(try encoder.encode(decoded)) == sortedJSON(answer.body), "\(View.self)")
        return decoded
    }

    @Test("every admin JSON answer round-trips through its view")
    func views() async throws {
        try await TestServer.with { server in
            let key = try await server.createProduct(#"{"name":"k","deviceQuota":4}"#)
            let certificate = try await server.createProduct(#"{"name":"c","authType":"certificate"}"#)
            _ = try await server.register(productId: key.id, deviceName: "gw-1", secret: key.secret)
            _ = try await server.register(productId: certificate.id, deviceName: "cam-1", secret: certificate.secret)

            let shown = try Self.roundTrip(try await server.admin(.GET, "/products/\(key.id)"), as: ProductView.self)
            #expect(shown.productSecret == key.secret && shown.deviceQuota == 4 && shown.caKeyType == nil)
            let unlimited = try Self.roundTrip(
                try await server.admin(.PATCH, "/products/\(key.id)", json: #"{"deviceQuota":null}"#),
                as: ProductView.self)
            #expect(unlimited.deviceQuota == nil)
            let cert = try Self.roundTrip(
                try await server.admin(.GET, "/products/\(certificate.id)"), as: ProductView.self)
            #expect(cert.caKeyType == "p256" && cert.certificateValidityDays == 3650)
            let list = try Self.roundTrip(try await server.admin(.GET, "/products"), as: ProductList.self)
            #expect(list.products.count == 2 && list.products.allSatisfy { $0.productSecret == nil })

            let device = try Self.roundTrip(
                try await server.admin(.GET, "/products/\(key.id)/devices/gw-1"), as: DeviceView.self)
            #expect(device.status == .registered && device.registeredAt != nil && device.activatedAt == nil)
            let created = try Self.roundTrip(
                try await server.admin(.POST, "/products/\(key.id)/devices", json: #"{"deviceName":"gw-2"}"#),
                as: DeviceView.self)
            #expect(created.registeredAt == nil)
            let page = try Self.roundTrip(
                try await server.admin(.GET, "/products/\(key.id)/devices?limit=1"), as: DeviceList.self)
            #expect(page.nextCursor == "gw-1")
            let last = try Self.roundTrip(
                try await server.admin(.GET, "/products/\(key.id)/devices?after=gw-1"), as: DeviceList.self)
            #expect(last.nextCursor == nil && last.devices.map(\.deviceName) == ["gw-2"])
            let events = try Self.roundTrip(
                try await server.admin(.GET, "/products/\(key.id)/events"), as: EventList.self)
            #expect(events.events.map(\.outcome).filter { !$0.hasPrefix("Admin.") } == ["Success"])

            let certificates = try Self.roundTrip(
                try await server.admin(.GET, "/products/\(certificate.id)/devices/cam-1/certificates"),
                as: CertificateList.self)
            let serial = try #require(certificates.certificates.first?.serial)
            #expect(certificates.certificates.first?.revokedAt == nil)
            let revoked = try Self.roundTrip(
                try await server.admin(.POST, "/products/\(certificate.id)/certificates/\(serial)/revoke"),
                as: CertificateView.self)
            #expect(revoked.status == "revoked" && revoked.revokedAt != nil)

            let failure = try Self.roundTrip(
                try await server.admin(.GET, "/products/NOSUCH"), as: AdminErrorBody.self)
            #expect(failure == AdminErrorBody(code: "NotFound", message: "product NOSUCH does not exist"))
        }
    }

    @Test("device names in paths are percent-decoded; the raw form keeps working")
    func encodedDeviceNames() async throws {
        try await TestServer.withKeyProduct { server, product in
            let base = "/products/\(product.id)/devices"
            for name in ["AA:BB:CC:00:11:22", "ops@site.example", "a%b"] {
                let body = #"{"deviceName":"\#(name)"}"#
                let created = try await server.admin(.POST, base, json: body)
                if name == "a%b" {
                    #expect(created.status == 400)
                    #expect(
                        (created.json["error"] as? [String: Any])?["code"] as? String
                            == "InvalidParameterValue.DeviceNameInvalid")
                    continue
                }
                #expect(created.status == 201)
                let encoded = try #require(name.addingPercentEncoding(withAllowedCharacters: .alphanumerics))
                #expect(encoded != name)
                for path in ["\(base)/\(name)", "\(base)/\(encoded)"] {
                    let shown = try await server.admin(.GET, path)
                    #expect(shown.status == 200, "\(path)")
                    #expect(shown.json["deviceName"] as? String == name)
                }
                #expect(
                    try await server.admin(.POST, "\(base)/\(encoded)/activate").json["status"] as? String
                        == "activated")
                #expect(
                    try await server.admin(.POST, "\(base)/\(encoded)/reset").json["status"] as? String == "created")
                #expect(try await server.admin(.GET, "\(base)/\(encoded)/certificates").status == 200)
                #expect(try await server.admin(.DELETE, "\(base)/\(encoded)").status == 204)
                let gone = try await server.admin(.GET, "\(base)/\(encoded)")
                #expect(gone.status == 404)
                #expect(
                    (gone.json["error"] as? [String: Any])?["message"] as? String == "device \(name) does not exist")
            }
        }
    }

    @Test("PATCH refuses a blank name as POST does; 401 answers carry WWW-Authenticate")
    func patchNameAndUnauthorized() async throws {
        try await TestServer.withKeyProduct { server, product in
            let blank = try await server.admin(.PATCH, "/products/\(product.id)", json: #"{"name":" "}"#)
            #expect(blank.status == 400)
            #expect((blank.json["error"] as? [String: Any])?["code"] as? String == "InvalidName")
            let renamed = try await server.admin(.PATCH, "/products/\(product.id)", json: #"{"name":"renamed"}"#)
            #expect(renamed.json["name"] as? String == "renamed")
            let denied = try await server.admin(.GET, "/products", token: nil)
            #expect(denied.status == 401)
            #expect(denied.headers["WWW-Authenticate"] == ["Bearer"])
            #expect(denied.headers["Content-Type"].first?.hasPrefix("application/json") == true)
        }
    }

    @Test(
        "unknown fields and repeated keys in admin bodies are 400 naming them, at any depth; nothing is created",
        arguments: [
            (".POST", "/products", #"{"name":"p","autocreate":false}"#, "unknown field autocreate"),
            (".POST", "/products", #"{"name":"p","name":"q"}"#, "the key name appears twice"),
            (
                ".POST", "/products",
                #"{"name":"p","topicRules":{"rules":[{"topic":"a","acess":"all"}]}}"#,
                "unknown field topicRules.rules.acess"
            ),
            (
                ".POST", "/products", #"{"name":"p","topicRules":{"rules":[],"rules":[]}}"#,
                "the key topicRules.rules appears twice"
            ),
            (".POST", "/products", #"{"name":"p","authType":"key","authType":"certificate"}"#, "appears twice"),
            (".PATCH", "/products/{id}", #"{"autoCreate":false,"deviceQouta":5}"#, "unknown field deviceQouta"),
            (".POST", "/products/{id}/devices", #"{"deviceName":"a","status":"activated"}"#, "unknown field status"),
            (".POST", "/products", #"{"name":"p"} trailing"#, "not a JSON object"),
            (".POST", "/products", String(repeating: "[", count: 40), "not a JSON object"),
        ])
    func strictBodies(method: String, path: String, body: String, message: String) async throws {
        try await TestServer.withKeyProduct { server, product in
            let answer = try await server.admin(
                method == ".PATCH" ? .PATCH : .POST, path.replacingOccurrences(of: "{id}", with: product.id),
                json: body)
            #expect(answer.status == 400, "\(answer.text)")
            let error = answer.json["error"] as? [String: Any]
            #expect(error?["code"] as? String == "InvalidBody")
            #expect((error?["message"] as? String)?.contains(message) == true, "\(answer.text)")
            let products = try await server.admin(.GET, "/products").json["products"] as? [[String: Any]]
            #expect(products?.count == 1)
            let shown = try await server.admin(.GET, "/products/\(product.id)")
            #expect(shown.json["autoCreate"] as? Bool == true && shown.json["deviceCount"] as? Int == 0)
        }
    }

    @Test("an escaped key is read as the key it spells; known fields pass in any order and spacing")
    func escapedKeys() async throws {
        try await TestServer.with { server in
            let created = try await server.admin(
                .POST, "/products", json: #"{ "autoCreate" : false , "na\u006de" : "escaped" }"#)
            #expect(created.status == 201, "\(created.text)")
            #expect(created.json["name"] as? String == "escaped")
            #expect(created.json["autoCreate"] as? Bool == false)
        }
    }

    @Test("product names may not hold control characters, on create and on PATCH")
    func controlCharactersInNames() async throws {
        try await TestServer.withKeyProduct { server, product in
            for name in [#"a\u001b[2Jb"#, #"line\nbreak"#, #"del\u007f"#, #"c1\u009b"#] {
                let created = try await server.admin(.POST, "/products", json: #"{"name":"\#(name)"}"#)
                #expect(created.status == 400, "\(name): \(created.text)")
                #expect((created.json["error"] as? [String: Any])?["code"] as? String == "InvalidName")
                let patched = try await server.admin(
                    .PATCH, "/products/\(product.id)", json: #"{"name":"\#(name)"}"#)
                #expect(patched.status == 400, "\(name): \(patched.text)")
            }
            let accented = try await server.admin(.POST, "/products", json: #"{"name":"Café \u00e9 東京"}"#)
            #expect(accented.status == 201)
        }
    }

    @Test("a new product gets a finite quota unless it asks for none; an explicit quota is kept")
    func defaultQuota() async throws {
        try await TestServer.with { server in
            let plain = try await server.admin(.POST, "/products", json: #"{"name":"a"}"#)
            #expect(plain.json["deviceQuota"] as? Int == 10_000, "\(plain.text)")
            let unlimited = try await server.admin(.POST, "/products", json: #"{"name":"b","deviceQuota":null}"#)
            #expect(unlimited.json["deviceQuota"] is NSNull, "\(unlimited.text)")
            let seven = try await server.admin(.POST, "/products", json: #"{"name":"c","deviceQuota":7}"#)
            #expect(seven.json["deviceQuota"] as? Int == 7)
        }
    }
}
