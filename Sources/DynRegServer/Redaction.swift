import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the server's configuration: the admin token and the
// master key never appear in a description or a mirror.

extension ServerConfiguration: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    package var description: String { customMirror.fieldDescription }
    package var debugDescription: String { description }
    package var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "host": host, "port": port, "timestampWindow": timestampWindow, "publicHosts": publicHosts,
                "tls": tls as Any, "adminToken": Redacted(), "masterKey": Redacted(),
                "maxDeviceBodySize": maxDeviceBodySize,
            ],
            displayStyle: .struct
        )
    }
}
