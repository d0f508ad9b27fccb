import DynRegProtocol
import X509

// The redaction rule of DynRegProtocol/Redaction.swift for the CA: neither the master key nor a CA private key
// appears in a description or a mirror (swift-crypto's key types do not promise to hide their bytes).

extension MasterKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    package var description: String { "MasterKey(<redacted>)" }
    package var debugDescription: String { description }
    package var customMirror: Mirror { Mirror(self, children: ["key": Redacted()], displayStyle: .struct) }
}

extension ProductCertificateAuthority: RedactedFields {
    package var redactedFields: KeyValuePairs<String, Any> {
        [
            "subject": String(describing: certificate.subject), "keyType": keyType, "privateKey": Redacted(),
        ]
    }
}
