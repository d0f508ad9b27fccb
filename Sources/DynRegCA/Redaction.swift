import DynRegProtocol
import X509

// The redaction rule of DynRegProtocol/Redaction.swift for the CA: a CA private key never appears in a description or
// a mirror (swift-crypto's key types do not promise to hide their bytes).

extension ProductCertificateAuthority: RedactedFields {
    package var redactedFields: KeyValuePairs<String, Any> {
        [
            "subject": String(describing: certificate.subject), "keyType": keyType, "privateKey": Redacted(),
        ]
    }
}
