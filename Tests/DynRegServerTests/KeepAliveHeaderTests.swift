import DynRegStore
import HTTPTypes
import Testing

@testable import DynRegServer

/// A registration answer keeps the connection open only when the request's `Connection` header lists `keep-alive`.
@Suite("Connection: keep-alive, read on bytes")
struct KeepAliveHeaderTests {
    static func headers(_ values: [String]) -> HTTPFields {
        var fields = HTTPFields()
        for value in values { fields.append(HTTPField(name: .connection, value: value)) }
        return fields
    }

    @Test(arguments: [
        "keep-alive", "Keep-Alive", "KEEP-ALIVE", " keep-alive\t", "close, keep-alive", "Upgrade,Keep-Alive",
    ])
    func listed(_ value: String) {
        #expect(DeviceRoutes<SQLiteStore>.keepsAlive(Self.headers([value])))
    }

    @Test(arguments: [
        "close", "keep-alives", "keep alive", "keep\ralive", "keep-aliv", "", "xkeep-alive", "keep-alive-x",
    ])
    func notListed(_ value: String) {
        #expect(!DeviceRoutes<SQLiteStore>.keepsAlive(Self.headers([value])))
    }

    @Test func inAnyOfSeveralHeaders() {
        #expect(DeviceRoutes<SQLiteStore>.keepsAlive(Self.headers(["close", "keep-alive"])))
        #expect(!DeviceRoutes<SQLiteStore>.keepsAlive(HTTPFields()))
    }
}
