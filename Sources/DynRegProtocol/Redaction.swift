// One redaction rule for every type that holds a secret: `"\(x)"`, `String(describing:)`, `String(reflecting:)` and
// `dump` show the other fields and `<redacted>` in place of the secret. Types list their fields in `customMirror`
// by hand (Swift has no public way to start from the default mirror), and `description` is built from it.

/// Stands for a secret in a description or a mirror.
package struct Redacted: Sendable, CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    package init() {}
    package var description: String { "<redacted>" }
    package var debugDescription: String { description }
    package var customMirror: Mirror { Mirror(self, children: []) }
}

/// A type whose description and mirror list `redactedFields`, where every secret is a ``Redacted``: one rule for
/// the package's own types (public types spell their conformances out, as public witnesses must).
package protocol RedactedFields: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    var redactedFields: KeyValuePairs<String, Any> { get }
}

extension RedactedFields {
    package var description: String { customMirror.fieldDescription }
    package var debugDescription: String { description }
    package var customMirror: Mirror { Mirror(self, children: redactedFields, displayStyle: .struct) }
}

extension Mirror {
    /// `Type(label: value, …)`, the shape Swift prints for a plain struct, from this mirror's children.
    package var fieldDescription: String {
        let fields = children.map { child in "\(child.label ?? "_"): \(String(reflecting: child.value))" }
        return "\(subjectType)(\(fields.joined(separator: ", ")))"
    }
}

extension DeviceCredential: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// The kind of credential; never the psk or the private key.
    public var description: String {
        switch self {
        case .key: return "DeviceCredential.key(psk: <redacted>)"
        case .certificate(let clientCert, let clientKey):
            let key = clientKey.isEmpty ? "none" : "<redacted>"
            return "DeviceCredential.certificate(clientCert: \(clientCert.utf8.count) bytes, clientKey: \(key))"
        }
    }

    public var debugDescription: String { description }

    public var customMirror: Mirror {
        switch self {
        case .key:
            return Mirror(self, children: ["encryptionType": encryptionType, "psk": Redacted()], displayStyle: .enum)
        case .certificate(let clientCert, let clientKey):
            return Mirror(
                self,
                children: [
                    "encryptionType": encryptionType, "clientCert": clientCert,
                    "clientKey": clientKey.isEmpty ? "" as Any : Redacted(),
                ],
                displayStyle: .enum
            )
        }
    }
}

extension MQTTCredentials: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    /// Client id and username; never the password.
    public var description: String { customMirror.fieldDescription }
    public var debugDescription: String { description }
    public var customMirror: Mirror {
        Mirror(
            self,
            children: ["clientId": clientId, "username": username, "password": Redacted()],
            displayStyle: .struct
        )
    }
}
