import DynRegPostgres
import DynRegProtocol
import DynRegStore
import DynRegTestSupport
import Foundation
import Logging
import PostgresNIO
import Synchronization
import Testing

/// PostgreSQL's group commit: batches of registrations in one transaction (`register(batch:)` makes them
/// exactly; `register(_:)` forms them from concurrent calls).
@Suite("PostgreSQL registrations in batches")
struct PostgresBatchTests {
    /// What a test compares of a decision: everything but the product id, so two products' answers compare.
    static func summary(_ result: Result<RegistrationDecision, any Error>) -> String {
        switch result {
        case .failure(let error): return "error \(error)"
        case .success(.rejected(let code)): return "rejected \(code.code)"
        case .success(.repeated(let answer)): return "repeated \(answer)"
        case .success(.issued(let device, let created)):
            return "issued \(device.name) \(device.status) \(device.psk ?? "-") #\(device.registrationCount) "
                + "created \(created)"
        }
    }

    static func attempts(_ productId: String) -> [RegistrationAttempt] {
        let answer = EncryptedPayload(length: 5, payload: "first")
        var first = StoreSamples.attempt(productId, "same", nonce: 1, psk: "K1")
        first.repeatable = RepeatableRequest(digest: [1, 2, 3], payload: answer)
        // A byte-identical retry of `first`: its answer, whatever it carries itself.
        var retry = first
        retry.credential = .key(psk: "K2")
        retry.repeatable?.payload = EncryptedPayload(length: 6, payload: "second")
        // The same pair in another request, and with no digest: replays.
        var other = first
        other.repeatable?.digest = [9]
        var unmarked = first
        unmarked.repeatable = nil
        return [
            StoreSamples.attempt(productId, "zz-last", nonce: 1),
            first, retry, other, unmarked,
            StoreSamples.attempt(productId, "same", nonce: 2, psk: "K3"),
            StoreSamples.attempt(productId, "same", nonce: 3, psk: "K4"),
            // The same request again after a newer registration: the first answer's credential is gone.
            retry,
            StoreSamples.attempt(productId, "aa-first", nonce: 1),
            StoreSamples.attempt(productId, "mm-middle", nonce: 7),
            StoreSamples.attempt(productId, "mm-middle", nonce: 7),
            StoreSamples.attempt(productId, "no-product", nonce: 1),
        ].map { attempt in
            var attempt = attempt
            if attempt.deviceName == "no-product" { attempt.productId = "MISSING001" }
            return attempt
        }
    }

    @Test("a batch answers as its attempts would one by one, sorted by device; a device's in arrival order")
    func aBatchAnswersAsSerialRegistrations() async throws {
        try await PostgresTestDatabase.withRunningStore { store, _ in
            // A quota below demand, so the order of new devices shows.
            _ = try await store.createProduct(StoreSamples.product("PSERIAL001", quota: 3))
            _ = try await store.createProduct(StoreSamples.product("PBATCH0001", quota: 3))
            // One by one, in the order the batch runs them: by product and device name, stable.
            let serialOrder = Self.attempts("PSERIAL001").enumerated().sorted {
                ($0.element.productId, $0.element.deviceName, $0.offset)
                    < ($1.element.productId, $1.element.deviceName, $1.offset)
            }
            var serial = [String](repeating: "", count: serialOrder.count)
            for (index, attempt) in serialOrder {
                serial[index] = Self.summary(try #require(await store.register(batch: [attempt]).first))
            }
            let batch = await store.register(batch: Self.attempts("PBATCH0001")).map(Self.summary)
            #expect(batch == serial)
            // The retry within the batch got the first answer; the quota held.
            #expect(
                batch[2] == "repeated \(RegistrationAnswer(payload: .init(length: 5, payload: "first"), created: true))"
            )
            #expect(batch.filter { $0.hasPrefix("rejected LimitExceeded.DeviceQuota") }.count == 1)
            for product in ["PSERIAL001", "PBATCH0001"] {
                try await StoreSamples.expectCountConsistent(store, product, is: 3)
                #expect(try await store.device(productId: product, deviceName: "same")?.registrationCount == 3)
                #expect(try await store.device(productId: product, deviceName: "same")?.psk == "K4")
            }
        }
    }

    @Test("one device many times in one batch: every registration counts, the last psk stays")
    func oneDeviceManyTimesInOneBatch() async throws {
        try await PostgresTestDatabase.withRunningStore { store, _ in
            _ = try await store.createProduct(StoreSamples.product("PSAME00001", quota: 1))
            let attempts = (1...50).map { StoreSamples.attempt("PSAME00001", "d1", nonce: Int64($0)) }
            let results = await store.register(batch: attempts)
            let devices = try results.map { try #require(StoreSamples.issued(try $0.get())) }
            #expect(devices.map(\.registrationCount) == Array(1...50))
            #expect(
                try results.map { result -> Bool in
                    guard case .issued(_, let created) = try result.get() else { return false }
                    return created
                } == [true] + Array(repeating: false, count: 49))
            let stored = try await store.device(productId: "PSAME00001", deviceName: "d1")
            #expect(stored?.registrationCount == 50)
            #expect(stored?.psk == "psk-d1-50")
            try await StoreSamples.expectCountConsistent(store, "PSAME00001", is: 1)
        }
    }

    /// The promise of group commit: nothing is answered before its transaction committed.
    @Test("a batch whose COMMIT fails answers nobody with a credential, nor one by one")
    func aBatchWhoseCommitFailsAnswersNobody() async throws {
        try await PostgresTestDatabase.withRunningStore { store, configuration in
            _ = try await store.createProduct(StoreSamples.product("PCOMMIT002"))
            try await Self.refuseAtCommit(configuration, table: "events")
            let results = await store.register(
                batch: (1...20).map { StoreSamples.attempt("PCOMMIT002", "d\($0)", nonce: 1) })
            #expect(results.count == 20)
            for result in results { #expect(throws: (any Error).self) { try result.get() } }
            // And batches the store forms itself from concurrent registrations.
            let concurrent = await withTaskGroup(of: Bool.self) { group in
                for index in 0..<100 {
                    group.addTask {
                        (try? await store.register(StoreSamples.attempt("PCOMMIT002", "c\(index)", nonce: 1))) != nil
                    }
                }
                return await group.reduce(into: 0) { $0 += $1 ? 1 : 0 }
            }
            #expect(concurrent == 0)
            #expect(try await store.devices(productId: "PCOMMIT002", status: nil, limit: 1000, after: nil).isEmpty)
            #expect(try await store.product(id: "PCOMMIT002")?.deviceCount == 0)
        }
    }

    @Test("one attempt's own error fails that attempt only; the others are stored as answered")
    func oneAttemptsErrorFailsOnlyThatAttempt() async throws {
        try await PostgresTestDatabase.withRunningStore { store, configuration in
            _ = try await store.createProduct(StoreSamples.product("PPOISON001"))
            for statement: PostgresQuery in [
                """
                CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    IF NEW.name = 'poison' THEN RAISE EXCEPTION 'poison' USING ERRCODE = 'check_violation'; END IF;
                    RETURN NEW;
                END $$
                """,
                "CREATE TRIGGER refuse_poison BEFORE INSERT ON devices FOR EACH ROW EXECUTE FUNCTION refuse_poison()",
            ] {
                try await PostgresTestDatabase.adminQuery(configuration, statement)
            }
            let names = ["a", "poison", "b", "c"]
            let results = await store.register(
                batch: names.map { StoreSamples.attempt("PPOISON001", $0, nonce: 1) })
            #expect(throws: (any Error).self) { try results[1].get() }
            for (name, result) in zip(names, results) where name != "poison" {
                let device = try #require(StoreSamples.issued(try result.get()))
                #expect(try await store.device(productId: "PPOISON001", deviceName: name)?.psk == device.psk)
            }
            #expect(try await store.device(productId: "PPOISON001", deviceName: "poison") == nil)
            try await StoreSamples.expectCountConsistent(store, "PPOISON001", is: 3)
        }
    }

    @Test("two instances, 2,000 concurrent new devices, quota 500: exactly 500 issued and counted")
    func quotaUnderConcurrencyAcrossTwoInstances() async throws {
        try await PostgresTestDatabase.withRunningStore { first, configuration in
            let second = PostgresStore(
                configuration: configuration, masterKey: LiveServer.masterKey, logger: PostgresTestDatabase.logger)
            try await withRunning(second) {
                _ = try await first.createProduct(StoreSamples.product("PQUOTA0500", quota: 500))
                // An unlimited product in the same batches, with names the two instances share.
                _ = try await first.createProduct(StoreSamples.product("PSHARED001"))
                struct Answer: Sendable {
                    var product: String
                    var device: String
                    var decision: RegistrationDecision?
                    var issued: Bool { if case .issued? = decision { true } else { false } }
                }
                let answers = await withTaskGroup(of: Answer.self) { group in
                    for (instance, store) in [first, second].enumerated() {
                        for index in 0..<1000 {
                            group.addTask {
                                let name = "i\(instance)-\(index)"
                                let attempt = StoreSamples.attempt("PQUOTA0500", name, nonce: 1)
                                return Answer(
                                    product: "PQUOTA0500", device: name, decision: try? await store.register(attempt))
                            }
                            group.addTask {
                                let name = "s-\(index % 250)"
                                let attempt = StoreSamples.attempt(
                                    "PSHARED001", name, nonce: Int64(instance * 1000 + index))
                                return Answer(
                                    product: "PSHARED001", device: name, decision: try? await store.register(attempt))
                            }
                        }
                    }
                    return await group.reduce(into: [Answer]()) { $0.append($1) }
                }
                #expect(answers.count == 4000)
                #expect(answers.allSatisfy { $0.decision != nil }, "every registration answered")
                let limited = answers.filter { $0.product == "PQUOTA0500" }
                let issued = limited.filter(\.issued)
                #expect(issued.count == 500)
                #expect(limited.allSatisfy { $0.issued || $0.decision == .rejected(.deviceQuota) })
                try await StoreSamples.expectCountConsistent(first, "PQUOTA0500", is: 500)
                let stored = try await first.devices(productId: "PQUOTA0500", status: nil, limit: 10_000, after: nil)
                #expect(Set(stored.map(\.name)) == Set(issued.map(\.device)))
                // Shared names: each of the 250 devices counts every acknowledged registration.
                #expect(answers.filter { $0.product == "PSHARED001" }.allSatisfy { $0.issued })
                try await StoreSamples.expectCountConsistent(first, "PSHARED001", is: 250)
                for device in try await first.devices(productId: "PSHARED001", status: nil, limit: 1000, after: nil) {
                    #expect(device.registrationCount == 8)
                }
            }
        }
    }

    /// Two instances' batches lock the rows they share in one order, so PostgreSQL never aborts one for a
    /// deadlock: the store would retry it (and log so), which would hide the fault from the answers.
    @Test("batches of two instances sharing devices in opposite orders commit without a deadlock")
    func oppositeOrdersAcrossInstances() async throws {
        try await PostgresTestDatabase.withFreshDatabase { configuration in
            var configuration = configuration
            configuration.leaseTimeout = .seconds(30)  // behaviour, not outages: see withRunningStore
            let retries = RetryLog()
            let stores = (0..<2).map { _ in
                var logger = Logger(label: "dynreg.tests") { _ in retries }
                logger.logLevel = .debug
                return PostgresStore(configuration: configuration, masterKey: LiveServer.masterKey, logger: logger)
            }
            _ = try await stores[0].migrate()
            try await withRunning(stores[0]) {
                try await withRunning(stores[1]) {
                    try await Self.registerInOppositeOrders(stores[0], stores[1])
                }
            }
            #expect(retries.messages.isEmpty, "\(retries.messages.prefix(5))")
        }
    }

    static func registerInOppositeOrders(_ first: PostgresStore, _ second: PostgresStore) async throws {
        _ = try await first.createProduct(StoreSamples.product("PORDER0001"))
        _ = try await first.createProduct(StoreSamples.product("PORDER0002"))
        let names = (0..<20).map { "d\($0)" }
        let rounds = 30
        let failures = await withTaskGroup(of: Int.self) { group in
            for round in 0..<rounds {
                for (instance, store) in [first, second].enumerated() {
                    group.addTask {
                        // New and then existing devices of two products, in opposite orders.
                        var attempts = names.flatMap { name in
                            ["PORDER0001", "PORDER0002"].map { product in
                                StoreSamples.attempt(
                                    product, "\(name)-\(round % 3)", nonce: Int64(round * 2 + instance))
                            }
                        }
                        if instance == 1 { attempts.reverse() }
                        let results = await store.register(batch: attempts)
                        return results.filter { (try? $0.get()) == nil }.count
                    }
                }
            }
            return await group.reduce(0, +)
        }
        #expect(failures == 0)
        for product in ["PORDER0001", "PORDER0002"] {
            try await StoreSamples.expectCountConsistent(first, product, is: 60)
            let devices = try await first.devices(productId: product, status: nil, limit: 1000, after: nil)
            #expect(devices.map(\.registrationCount).reduce(0, +) == rounds * 2 * names.count)
        }
    }

    /// A constraint trigger on `table` that fails every transaction at COMMIT.
    static func refuseAtCommit(_ configuration: PostgresStore.Configuration, table: String) async throws {
        for statement: PostgresQuery in [
            """
            CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN RAISE EXCEPTION 'refused at commit' USING ERRCODE = 'check_violation'; END $$
            """,
            """
            CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON \(unescaped: table)
            DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()
            """,
        ] {
            try await PostgresTestDatabase.adminQuery(configuration, statement)
        }
    }
}

/// Records what the store logs when PostgreSQL aborted a transaction it then retried, or refused a batch.
final class RetryLog: LogHandler, Sendable {
    private let recorded = Mutex<[String]>([])
    var messages: [String] { recorded.withLock { $0 } }

    func log(event: LogEvent) {
        let message = "\(event.message)"
        guard message.hasPrefix("retrying a transaction") || message.hasPrefix("registering a refused batch") else {
            return
        }
        recorded.withLock { $0.append("\(message) \(event.metadata ?? [:])") }
    }

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { nil }
        set {}
    }
    var metadata: Logger.Metadata {
        get { [:] }
        set {}
    }
    var logLevel: Logger.Level {
        get { .debug }
        set {}
    }
}
