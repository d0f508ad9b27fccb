import DynRegStore
import Logging
import PostgresNIO
import Synchronization

/// Keeps one instance's login cache exact while other instances write the same database: migration v10 notifies
/// every committed change of a device row on ``channel``, and this listens on a connection of its own and forgets
/// each device named.
///
/// What another instance's write may leave behind: its old row, from its COMMIT until the notification arrives
/// here (one round trip on a healthy connection). Whenever that cannot be promised the cache is off, and emptied:
/// before LISTEN is confirmed, once the connection is lost, while reconnecting, and when no heartbeat came back
/// for `timeout` (a connection that died silently delivers nothing, and says nothing either). A heartbeat is a
/// notification this listener sends itself: PostgreSQL delivers a channel's notifications in commit order, so
/// receiving it proves that every change committed before it was sent has been received.
final class LoginListener: Sendable {
    static let channel = "dynreg_devices"
    /// The payload that forgets every device (migration v10's, for a statement that changed many).
    static let everyDevice = "*"
    private static let heartbeatPrefix = "heartbeat "

    private let cache: LoginCache
    private let configuration: PostgresStore.Configuration
    private let logger: Logger
    /// The listener's connection in `pg_stat_activity`, distinct per store (tests end one store's listener).
    let applicationName: String
    private let state = Mutex(State())

    private struct State {
        var listening = false
        /// When the newest heartbeat that came back was sent.
        var acknowledged = ContinuousClock.now
    }

    init(cache: LoginCache, configuration: PostgresStore.Configuration, logger: Logger) {
        self.cache = cache
        self.configuration = configuration
        self.logger = logger
        self.applicationName = "dynreg-login-listener-" + String(UInt32.random(in: .min ... .max), radix: 16)
    }

    /// Whether the cache is on: LISTEN was confirmed, and the connection answers heartbeats.
    var isListening: Bool { state.withLock { $0.listening } }

    /// Listens until cancelled, reconnecting after each failure; the cache is off whenever this is not listening.
    func run() async {
        cache.disable()
        let firstDelay = Duration.milliseconds(100)
        var delay = firstDelay
        while !Task.isCancelled {
            var listened = false
            do {
                try await listen { listened = true }
            } catch  where Task.isCancelled {
                break
            } catch is NotMigrated {
                logger.debug("login cache off until migration v10 is applied")
            } catch {
                logger.warning(
                    "login cache off: not listening for other instances' device changes; logins read the database",
                    metadata: ["dynreg.reason": "\(PostgresStore.reason(error))"])
            }
            // After a session that listened, the next attempt comes soon; failures in a row wait longer each time.
            delay = listened ? firstDelay : min(delay * 2, .seconds(5))
            try? await Task.sleep(for: delay)
        }
        stopListening()
    }

    private func stopListening() {
        cache.disable()
        state.withLock { $0.listening = false }
    }

    /// One connection's session; throws when it ends. `started` is called once LISTEN is confirmed.
    private func listen(started: () -> Void) async throws {
        let connection = try await PostgresStore.connect(
            configuration, applicationName: applicationName, logger: logger)
        do {
            try await connection.listen(on: Self.channel) { notifications in
                // Without migration v10's triggers nothing would be heard (the store starts before it migrates).
                guard try await Self.devicesNotify(connection, logger: logger) else { throw NotMigrated() }
                // Any change committed from here on is heard; what was cached before may have missed one.
                let base = ContinuousClock.now
                state.withLock { state in
                    state.acknowledged = base
                    state.listening = true
                }
                cache.enable()
                started()
                logger.debug("listening for device changes: login cache on")
                try await withThrowingTaskGroup(of: Void.self) { group in
                    group.addTask { [self] in
                        for try await notification in notifications { receive(notification.payload, base: base) }
                        throw StoreError(.unavailable, "the notifications ended")
                    }
                    group.addTask { [self] in try await sendHeartbeats(connection, base: base) }
                    group.addTask { [self] in try await watchHeartbeats() }
                    defer { group.cancelAll() }
                    do {
                        try await group.next()
                        throw StoreError(.unavailable, "the listener stopped")
                    } catch {
                        // Off at once; closing fails a heartbeat stuck on a dead connection, which cancelling
                        // would not end.
                        stopListening()
                        try? await connection.close()
                        throw error
                    }
                }
            }
        } catch {
            stopListening()
            try? await connection.close()
            throw error
        }
        stopListening()
        try? await connection.close()
    }

    private struct NotMigrated: Error {}

    private static func devicesNotify(_ connection: PostgresConnection, logger: Logger) async throws -> Bool {
        let rows = try await connection.checkedQuery(
            """
            SELECT count(*) FROM pg_trigger
            WHERE tgrelid = to_regclass('devices') AND tgname IN ('devices_notify_update', 'devices_notify_delete')
            """, logger: logger)
        for try await count in rows.decode(Int.self) { return count == 2 }
        return false
    }

    private func receive(_ payload: String, base: ContinuousClock.Instant) {
        if payload.hasPrefix(Self.heartbeatPrefix) {
            // Other instances' heartbeats share the channel.
            let fields = payload.dropFirst(Self.heartbeatPrefix.count).split(separator: " ")
            guard fields.count == 2, fields[0] == applicationName, let sent = Int64(fields[1]) else { return }
            let sentAt = base + .nanoseconds(sent)
            state.withLock { $0.acknowledged = max($0.acknowledged, sentAt) }
        } else if let slash = payload.firstIndex(of: "/") {
            cache.invalidate(
                productId: String(payload[..<slash]), deviceName: String(payload[payload.index(after: slash)...]))
        } else {
            // `*`, or a payload of a later release: forgetting everything is always exact.
            cache.invalidateAll()
        }
    }

    private func sendHeartbeats(_ connection: PostgresConnection, base: ContinuousClock.Instant) async throws {
        while true {
            let sent = (ContinuousClock.now - base) / .nanoseconds(1)
            let payload = "\(Self.heartbeatPrefix)\(applicationName) \(Int64(sent))"
            _ = try await connection.checkedQuery(
                "SELECT pg_notify(\(Self.channel), \(payload))", logger: logger
            ).collect()
            try await Task.sleep(for: configuration.loginListenerHeartbeat)
        }
    }

    /// Throws once no heartbeat came back for `loginListenerTimeout`, however the connection looks.
    private func watchHeartbeats() async throws {
        let timeout = configuration.loginListenerTimeout
        while true {
            let acknowledged = state.withLock { $0.acknowledged }
            if ContinuousClock.now - acknowledged > timeout {
                throw StoreError(.unavailable, "no heartbeat came back within \(timeout)")
            }
            try await Task.sleep(for: min(configuration.loginListenerHeartbeat, timeout))
        }
    }
}
