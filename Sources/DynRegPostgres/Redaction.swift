import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the database configuration: the password never appears
// in a description or a mirror.

extension PostgresStore.Configuration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The URL without the password.
    public var description: String { redactedDescription }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "host": host, "port": port, "username": username, "password": password.map { _ in Redacted() } as Any,
                "database": database, "tls": tls, "maximumConnections": maximumConnections,
                "connectTimeout": connectTimeout, "leaseTimeout": leaseTimeout,
            ],
            displayStyle: .struct)
    }
}
