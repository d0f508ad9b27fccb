import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the database configuration: the password never appears
// in a description or a mirror.

extension PostgresStore.Configuration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The URL without the password.
    package var description: String { redactedDescription }
    package var debugDescription: String { description }
    package var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "host": host, "port": port, "username": username, "password": password.map { _ in Redacted() } as Any,
                "database": database, "tls": tls, "maximumConnections": maximumConnections,
                "connectTimeout": connectTimeout, "leaseTimeout": leaseTimeout,
            ],
            displayStyle: .struct
        )
    }
}
