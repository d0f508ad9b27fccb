import DynRegProtocol
import DynRegServer
import DynRegStore
import Foundation
import Testing

/// The overview and the events page over real HTTP, from registrations sent to a real server.
@Suite("Console overview and events")
struct ConsolePagesTests {
    static let quota = RegistrationErrorCode.deviceQuota.code

    @Test("the overview counts this hour's registrations of every product per outcome, from the store's query")
    func overview() async throws {
        try await TestServer.with { server in
            let console = try await ConsoleClient.signedIn(server)
            let first = try await server.createProduct()
            let second = try await server.createProduct(#"{"name":"full","deviceQuota":1}"#)
            for index in 0..<3 {
                #expect(
                    try await server.register(productId: first.id, deviceName: "a\(index)", secret: first.secret)
                        .errorCode == nil)
            }
            #expect(
                try await server.register(productId: second.id, deviceName: "b", secret: second.secret).errorCode
                    == nil)
            // Past the quota: refused after the secret was proven, so an event (a wrong signature is only counted).
            let full = try await server.register(productId: second.id, deviceName: "c", secret: second.secret)
            #expect(full.errorCode == Self.quota)
            // An operator's change is an event too, not a registration.
            #expect(try await console.post("/console/products/\(first.id)/devices", [("names", "pre-1")]).status == 200)

            let page = try await console.get("/console/")
            #expect(page.status == 200)
            #expect(page.text.contains("Attempts in the hour: 5; busiest minute:"), "\(page.text)")
            let success = ">\(RegistrationEvent.success)</span></td><td class=\"num\">4</td>"
            #expect(page.text.contains(success), "\(page.text)")
            let failure = ">\(Self.quota)</span></td><td class=\"num\">1</td>"
            #expect(page.text.contains(failure))
            #expect(!page.text.contains("Admin.DeviceCreated"))
            #expect(page.text.components(separatedBy: "class=\"bar\"").count - 1 == 60)
        }
    }

    @Test("events filter in the store: across products by outcome and device, or within one product")
    func events() async throws {
        try await TestServer.with { server in
            let console = try await ConsoleClient.signedIn(server)
            let first = try await server.createProduct()
            let second = try await server.createProduct(#"{"name":"full","deviceQuota":1}"#)
            _ = try await server.register(productId: first.id, deviceName: "shared", secret: first.secret)
            _ = try await server.register(productId: second.id, deviceName: "shared", secret: second.secret)
            _ = try await server.register(productId: second.id, deviceName: "other", secret: second.secret)
            func rows(_ query: String) async throws -> Int {
                let page = try await console.get("/console/events?\(query)")
                #expect(page.status == 200)
                return page.text.components(separatedBy: "<tr><td class=\"time\">").count - 1
            }
            // Three registrations and the two products' creation.
            #expect(try await rows("") == 5)
            #expect(try await rows("outcome=Admin.ProductCreated") == 2)
            #expect(try await rows("device=shared") == 2)
            #expect(try await rows("outcome=Success") == 2)
            #expect(try await rows("outcome=\(Self.quota)") == 1)
            #expect(try await rows("product=\(first.id)&device=shared") == 1)
            #expect(try await rows("product=\(second.id)&outcome=Success") == 1)
            #expect(try await rows("product=NOSUCH") == 0)
        }
    }
}
