/// Device names: 1–48 characters of `A–Z a–z 0–9 _ - . : @` (IMEIs and MAC addresses fit).
public enum DeviceNameRules {
    public static let maximumLength = 48

    public static func isValid(_ name: some StringProtocol) -> Bool {
        let utf8 = name.utf8
        guard !utf8.isEmpty, utf8.count <= maximumLength else { return false }
        return utf8.allSatisfy(isAllowed)
    }

    private static func isAllowed(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        case UInt8(ascii: "_"), UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: ":"), UInt8(ascii: "@"):
            return true
        default:
            return false
        }
    }
}

/// Product secrets key the payload cipher with their first 16 bytes, so shorter ones cannot work.
public enum ProductSecretRules {
    public static let minimumLength = 16

    public static func isValid(_ secret: some StringProtocol) -> Bool {
        secret.utf8.count >= minimumLength
    }
}

/// Product ids: 1–32 characters of `A–Z a–z 0–9 _ -` (Tencent issues ten upper-case letters and digits).
public enum ProductIdRules {
    public static let maximumLength = 32

    public static func isValid(_ productId: some StringProtocol) -> Bool {
        let utf8 = productId.utf8
        guard !utf8.isEmpty, utf8.count <= maximumLength else { return false }
        return utf8.allSatisfy { byte in
            switch byte {
            case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "_"), UInt8(ascii: "-"):
                return true
            default:
                return false
            }
        }
    }
}
