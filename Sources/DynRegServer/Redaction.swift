import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the server's configuration: the admin and broker tokens and the
// master key never appear in a description or a mirror.

extension ServerConfiguration: RedactedFields {
    package var redactedFields: KeyValuePairs<String, Any> {
        [
            "host": host, "port": port, "timestampWindow": timestampWindow, "publicHosts": publicHosts,
            "tls": tls as Any, "adminToken": Redacted(), "brokerToken": Redacted(), "masterKey": Redacted(),
            "maxDeviceBodySize": maxDeviceBodySize,
        ]
    }
}
