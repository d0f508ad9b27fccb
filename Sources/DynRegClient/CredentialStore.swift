public import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
public import Musl
#elseif canImport(Darwin)
public import Darwin
#endif

/// Where a device keeps the credential it registered, so that it registers once.
///
/// ``DeviceRegistrar/registerIfNeeded(productId:deviceName:productSecret:store:)`` reads the store before
/// registering and writes to it after. Implement it over a keychain, a secure element or a flash partition;
/// ``FileCredentialStore`` keeps the credential in a JSON file.
public protocol CredentialStore: Sendable {
    /// The credential stored for a device, or `nil` when there is none.
    func credential(productId: String, deviceName: String) async throws -> RegisteredCredential?
    /// Stores a credential, replacing any credential of the same device.
    func save(_ credential: RegisteredCredential) async throws
}

/// A ``CredentialStore`` that keeps one device's credential in a JSON file readable by its owner only.
///
/// The file is written atomically: a temporary file created with mode 0600 in the same directory, flushed to disk,
/// then renamed over the old one, so a power cut leaves either the old credential or the new one, never half of
/// one. Errors are ``RegistrationError`` with code ``RegistrationError/Code/credentialStore``; they name the file but
/// never quote its content.
public struct FileCredentialStore: CredentialStore {
    /// The credential file.
    public let fileURL: URL

    /// A store at a file URL.
    public init(fileURL: URL) {
        self.fileURL = fileURL
    }

    /// A store at a file path, relative to the current directory unless absolute.
    public init(path: String) {
        self.fileURL = URL(fileURLWithPath: path)
    }

    /// The credential in the file, whichever device it belongs to, or `nil` when the file does not exist.
    public func load() throws(RegistrationError) -> RegisteredCredential? {
        let data: Data
        do {
            data = try Data(contentsOf: fileURL)
        } catch {
            if !FileManager.default.fileExists(atPath: fileURL.path) { return nil }
            throw storeError("could not read \(fileURL.path)", underlying: error)
        }
        do {
            return try JSONDecoder().decode(RegisteredCredential.self, from: data)
        } catch {
            // The decoding error could quote the file's content, so it is not kept.
            throw storeError("\(fileURL.path) does not hold a credential (productId, deviceName, encryptionType, psk)")
        }
    }

    /// The credential in the file when it belongs to this device, or `nil` when the file does not exist.
    ///
    /// - Throws: ``RegistrationError`` when the file holds another device's credential: registering again would
    ///   replace a credential that may be the only copy.
    public func credential(productId: String, deviceName: String) async throws -> RegisteredCredential? {
        guard let stored = try load() else { return nil }
        guard stored.productId == productId, stored.deviceName == deviceName else {
            throw storeError(
                "\(fileURL.path) holds the credential of device \(stored.deviceName) of product \(stored.productId), "
                    + "not of \(deviceName) of \(productId); move it away or use another file")
        }
        return stored
    }

    /// Writes the credential atomically with mode 0600.
    public func save(_ credential: RegisteredCredential) async throws {
        try persist(credential)
    }

    private func persist(_ credential: RegisteredCredential) throws(RegistrationError) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        let data: Data
        do {
            data = try encoder.encode(credential)
        } catch {
            throw storeError("could not encode the credential")
        }
        try writeAtomically(Array(data) + [0x0A])
    }

    private func writeAtomically(_ bytes: [UInt8]) throws(RegistrationError) {
        let directory = fileURL.deletingLastPathComponent().path
        let temporary =
            fileURL.deletingLastPathComponent()
            .appendingPathComponent(".\(fileURL.lastPathComponent).\(UInt32.random(in: .min ... .max)).tmp").path
        // O_EXCL with mode 0600: the credential is never readable by others, not even for an instant.
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard descriptor >= 0 else { throw systemError("could not create a temporary file in \(directory)") }
        var renamed = false
        defer { if !renamed { unlink(temporary) } }
        var closed = false
        defer { if !closed { close(descriptor) } }
        // The umask can only narrow the mode; fchmod makes it exactly 0600 whatever it was.
        guard fchmod(descriptor, 0o600) == 0 else { throw systemError("could not set mode 0600 on \(temporary)") }
        var written = 0
        while written < bytes.count {
            let result = bytes.withUnsafeBytes { buffer in
                write(descriptor, buffer.baseAddress! + written, buffer.count - written)
            }
            if result < 0 {
                if errno == EINTR { continue }
                throw systemError("could not write \(temporary)")
            }
            written += result
        }
        guard fsync(descriptor) == 0 else { throw systemError("could not flush \(temporary)") }
        closed = true
        guard close(descriptor) == 0 else { throw systemError("could not close \(temporary)") }
        guard rename(temporary, fileURL.path) == 0 else { throw systemError("could not rename into \(fileURL.path)") }
        renamed = true
        // Flush the directory too, so the rename survives a power cut.
        let directoryDescriptor = open(directory, O_RDONLY)
        if directoryDescriptor >= 0 {
            _ = fsync(directoryDescriptor)
            close(directoryDescriptor)
        }
    }

    private func storeError(_ message: String, underlying: (any Error)? = nil) -> RegistrationError {
        RegistrationError(.credentialStore, message, underlying: underlying)
    }

    private func systemError(_ message: String) -> RegistrationError {
        storeError(message + ": " + String(cString: strerror(errno)))
    }
}
