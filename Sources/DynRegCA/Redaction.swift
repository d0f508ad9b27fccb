import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the CA: neither the master key nor a CA private key
// appears in a description or a mirror (swift-crypto's key types do not promise to hide their bytes).

extension MasterKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { "MasterKey(<redacted>)" }
    public var debugDescription: String { description }
    public var customMirror: Mirror { Mirror(self, children: ["key": Redacted()], displayStyle: .struct) }
}

extension ProductCertificateAuthority: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    public var description: String { customMirror.fieldDescription }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(
            self,
            children: [
                "subject": String(describing: certificate.subject), "keyType": keyType, "privateKey": Redacted(),
            ],
            displayStyle: .struct)
    }
}
