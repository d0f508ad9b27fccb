/// The header names and values of the device requests (PROTOCOL.md §1 and §2), spelled as the official SDKs send
/// them. Header names compare case-insensitively on the wire.
public enum DeviceRequestHeader {
    public static let contentType = "Content-Type"
    public static let algorithm = "X-TC-Algorithm"
    public static let timestamp = "X-TC-Timestamp"
    public static let nonce = "X-TC-Nonce"
    public static let signature = "X-TC-Signature"

    /// The `Content-Type` of `POST /device/register`.
    public static let currentContentType = "application/json; charset=utf-8"
    /// The `Content-Type` the C SDK gives its JSON body on `POST /register/dev`; servers ignore it.
    public static let legacyContentType = "application/x-www-form-urlencoded"
}
