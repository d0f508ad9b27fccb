import DynRegProtocol

// The redaction rule of DynRegProtocol/Redaction.swift for the store's models: the product secret, the psk and the
// sealed CA key never appear in a description or a mirror, nor does the master key (swift-crypto's key types do not
// promise to hide their bytes).

extension MasterKey: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    package var description: String { "MasterKey(<redacted>)" }
    package var debugDescription: String { description }
    package var customMirror: Mirror { Mirror(self, children: ["key": Redacted()], displayStyle: .struct) }
}

extension Product: RedactedFields {
    package var redactedFields: KeyValuePairs<String, Any> {
        [
            "id": id, "name": name, "authType": authType, "secret": Redacted(),
            "dynamicRegistration": dynamicRegistration, "autoCreate": autoCreate, "deviceQuota": deviceQuota as Any,
            "allowClocklessDevices": allowClocklessDevices, "deviceCount": deviceCount, "createdAt": createdAt,
            "certificateAuthority": certificateAuthority as Any,
        ]
    }
}

extension StoredCertificateAuthority: RedactedFields {
    package var redactedFields: KeyValuePairs<String, Any> {
        [
            "certificatePEM": certificatePEM, "sealedPrivateKey": Redacted(), "keyType": keyType,
            "certificateValidityDays": certificateValidityDays,
        ]
    }
}

extension Device: RedactedFields {
    package var redactedFields: KeyValuePairs<String, Any> {
        [
            "productId": productId, "name": name, "status": status,
            "psk": psk.map { _ in Redacted() } as Any, "createdAt": createdAt,
            "registeredAt": registeredAt as Any, "activatedAt": activatedAt as Any,
            "registrationCount": registrationCount,
        ]
    }
}

extension IssuedCredential: CustomStringConvertible, CustomDebugStringConvertible, CustomReflectable {
    package var description: String {
        switch self {
        case .key: return "IssuedCredential.key(psk: <redacted>)"
        case .certificate(let certificate): return "IssuedCredential.certificate(\(String(reflecting: certificate)))"
        case .certificateKept: return "IssuedCredential.certificateKept"
        }
    }

    package var debugDescription: String { description }

    package var customMirror: Mirror {
        switch self {
        case .key: return Mirror(self, children: ["psk": Redacted()], displayStyle: .enum)
        case .certificate(let certificate):
            return Mirror(self, children: ["certificate": certificate], displayStyle: .enum)
        case .certificateKept: return Mirror(self, children: [:], displayStyle: .enum)
        }
    }
}
