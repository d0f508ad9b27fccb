import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the server's configuration: the admin token and the
// master key never appear in a description or a mirror.

extension ServerConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { customMirror.fieldDescription }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "host": host, "port": port, "timestampWindow": timestampWindow, "publicHosts": publicHosts,
                "tls": tls as Any, "adminToken": Redacted(), "masterKey": Redacted(),
                "maxDeviceBodySize": maxDeviceBodySize,
            ],
            displayStyle: .struct)
    }
}
