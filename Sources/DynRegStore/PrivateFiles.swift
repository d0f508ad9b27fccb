#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Files and directories only the server's user may open: made 0600 (0700) whatever the umask was, and brought back
/// to it when they already exist with a looser mode (created by an earlier release, or under another umask).
package enum PrivateFiles {
    package static let fileMode = 0o600
    package static let directoryMode = 0o700

    /// Creates `path` empty if it is missing, and makes it and whichever of `others` exist 0600.
    package static func restrict(_ path: String, alsoExisting others: [String] = []) throws {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode_t(fileMode))
        guard descriptor >= 0 else { throw failure("open", path) }
        defer { close(descriptor) }
        guard fchmod(descriptor, mode_t(fileMode)) == 0 else { throw failure("restrict the mode of", path) }
        for other in others { try restrictIfExists(other) }
    }

    /// Makes `path` 0600 if it exists.
    package static func restrictIfExists(_ path: String) throws {
        guard chmod(path, mode_t(fileMode)) == 0 || errno == ENOENT else { throw failure("restrict the mode of", path) }
    }

    /// Makes the directory `path` 0700; returns its mode before, when that differed.
    @discardableResult
    package static func restrictDirectory(_ path: String) throws -> Int? {
        var status = stat()
        guard stat(path, &status) == 0 else { throw failure("read the mode of", path) }
        let before = Int(status.st_mode & 0o7777)
        guard before != directoryMode else { return nil }
        guard chmod(path, mode_t(directoryMode)) == 0 else { throw failure("restrict the mode of", path) }
        return before
    }

    private static func failure(_ action: String, _ path: String) -> StoreError {
        StoreError(.unavailable, "cannot \(action) \(path): \(String(cString: strerror(errno)))")
    }
}
