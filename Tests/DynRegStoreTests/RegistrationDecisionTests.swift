import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import PostgresNIO
import Testing

@testable import DynRegPostgres

/// The registration rules without a database: `RegistrationRules` is what both stores apply.
@Suite struct RegistrationDecisionTests {
    typealias Limits = RegistrationRules.ProductLimits

    struct Case: Sendable, CustomTestStringConvertible {
        var name: String
        var product: Limits?
        var device: DeviceStatus?
        var replay: RegistrationRules.Replay
        var expected: RegistrationRules.Outcome

        var testDescription: String { name }
    }

    static let open = Limits(autoCreate: true, deviceQuota: nil, deviceCount: 5)
    static let full = Limits(autoCreate: true, deviceQuota: 5, deviceCount: 5)
    static let preCreate = Limits(autoCreate: false, deviceQuota: 5, deviceCount: 5)

    static let cases: [Case] = [
        Case(name: "no product", product: nil, device: nil, replay: .fresh, expected: .refuse(.productNotExist)),
        Case(
            name: "no product, reused pair", product: nil, device: nil, replay: .reused,
            expected: .refuse(.productNotExist)),
        Case(name: "new device, auto-create", product: open, device: nil, replay: .fresh, expected: .issue),
        Case(
            name: "new device, pre-create only", product: preCreate, device: nil, replay: .fresh,
            expected: .refuse(.deviceNotExist)),
        Case(
            name: "new device, quota reached", product: full, device: nil, replay: .fresh,
            expected: .refuse(.deviceQuota)),
        Case(
            name: "new device, one below quota", product: Limits(autoCreate: true, deviceQuota: 6, deviceCount: 5),
            device: nil, replay: .fresh, expected: .issue),
        Case(
            name: "new device, reused pair", product: open, device: nil, replay: .reused,
            expected: .refuse(.nonceReused)),
        // An existing device neither needs auto-create nor counts against the quota again.
        Case(
            name: "created device, quota reached", product: full, device: .created, replay: .fresh,
            expected: .issue),
        Case(
            name: "created device, pre-create only", product: preCreate, device: .created, replay: .fresh,
            expected: .issue),
        Case(
            name: "registered device registers again", product: open, device: .registered, replay: .fresh,
            expected: .issue),
        Case(
            name: "registered device, reused pair", product: open, device: .registered, replay: .reused,
            expected: .refuse(.nonceReused)),
        Case(
            name: "activated device", product: open, device: .activated, replay: .fresh,
            expected: .refuse(.deviceAlreadyActivated)),
        Case(
            name: "activated device, reused pair", product: full, device: .activated, replay: .reused,
            expected: .refuse(.deviceAlreadyActivated)),
    ]

    @Test(arguments: cases)
    func decides(_ test: Case) {
        var consulted = false
        let outcome = RegistrationRules.decide(product: test.product, device: test.device) {
            consulted = true
            return test.replay
        }
        #expect(outcome == test.expected)
        // The replay entry is recorded where it is consulted: only an attempt that passed everything else may.
        let reachesReplay = test.expected == .issue || test.expected == .refuse(.nonceReused)
        #expect(consulted == reachesReplay)
    }

    @Test func everyOutcomeRoundTripsThroughItsSymbol() {
        let outcomes = [RegistrationRules.Outcome.issue] + RegistrationRules.storeRefusals.map { .refuse($0) }
        for outcome in outcomes {
            #expect(RegistrationRules.Outcome(symbol: outcome.symbol) == outcome)
        }
        #expect(RegistrationRules.Outcome.issue.symbol == RegistrationEvent.success)
        // A code the store never answers is not an outcome: PostgreSQL answering it is an error, not a guess.
        #expect(RegistrationRules.Outcome(symbol: RegistrationErrorCode.signatureFailure.code) == nil)
        #expect(RegistrationRules.Outcome(symbol: "2") == nil)
    }

    /// dynreg_register (v4) mirrors `decide`: it answers each of its symbols, and no other.
    @Test func postgresFunctionAnswersTheSameSymbols() throws {
        let migration = try #require(Migrations.all.first { $0.id == 4 })
        let sql = migration.statements.map(\.sql).joined(separator: "\n")
        let outcomes = [RegistrationRules.Outcome.issue] + RegistrationRules.storeRefusals.map { .refuse($0) }
        for outcome in outcomes {
            #expect(sql.contains("v_outcome := '\(outcome.symbol)'"), "\(outcome.symbol)")
        }
        let assigned = sql.split(separator: "\n").filter { $0.contains("v_outcome := '") }
        #expect(assigned.count == outcomes.count)
        // And says so where a database administrator reads it.
        #expect(sql.contains("RegistrationRules.decide"))
    }

    struct AdmitCase: Sendable, CustomTestStringConvertible {
        var name: String
        var timestamp: Int64
        var clockless: Bool = false
        var dynamicRegistration: Bool = true
        var expected: RegistrationRules.Admission

        var testDescription: String { name }
    }

    static let now = Date(timeIntervalSince1970: 1_700_000_000)

    static let admitCases: [AdmitCase] = [
        AdmitCase(
            name: "on time", timestamp: 1_700_000_000,
            expected: .proceed(replayExpiry: Date(timeIntervalSince1970: 1_700_000_301))),
        AdmitCase(
            name: "edge of the window, past", timestamp: 1_699_999_700,
            expected: .proceed(replayExpiry: Date(timeIntervalSince1970: 1_700_000_001))),
        AdmitCase(
            name: "edge of the window, future", timestamp: 1_700_000_300,
            expected: .proceed(replayExpiry: Date(timeIntervalSince1970: 1_700_000_601))),
        AdmitCase(name: "too old", timestamp: 1_699_999_699, expected: .refuse(.signatureExpire)),
        AdmitCase(name: "too new", timestamp: 1_700_000_301, expected: .refuse(.signatureExpire)),
        AdmitCase(name: "no clock, not allowed", timestamp: 0, expected: .refuse(.signatureExpire)),
        AdmitCase(name: "no clock, allowed", timestamp: 0, clockless: true, expected: .proceed(replayExpiry: nil)),
        AdmitCase(name: "far past cannot overflow", timestamp: .min, expected: .refuse(.signatureExpire)),
        AdmitCase(name: "far future", timestamp: .max, expected: .refuse(.signatureExpire)),
        // The window is checked first: a stale request learns nothing about the product's switch.
        AdmitCase(
            name: "too old, registration off", timestamp: 1, dynamicRegistration: false,
            expected: .refuse(.signatureExpire)),
        AdmitCase(
            name: "registration off", timestamp: 1_700_000_000, dynamicRegistration: false,
            expected: .refuse(.dynamicRegistrationDisabled)),
    ]

    @Test(arguments: admitCases)
    func admits(_ test: AdmitCase) {
        var product = StoreSamples.product("PRULES0001")
        product.allowClocklessDevices = test.clockless
        product.dynamicRegistration = test.dynamicRegistration
        let admission = RegistrationRules.admit(product: product, timestamp: test.timestamp, now: Self.now, window: 300)
        #expect(admission == test.expected)
    }
}
