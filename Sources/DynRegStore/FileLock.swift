import Foundation
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// An exclusive `flock` on a file beside the database, held until `release()` or the lock's end.
final class FileLock: Sendable {
    private let descriptor: Mutex<Int32?>

    init(path: String) throws {
        let descriptor = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode_t(PrivateFiles.fileMode))
        guard descriptor >= 0 else {
            throw StoreError(.unavailable, "cannot open \(path): \(String(cString: strerror(errno)))")
        }
        // A lock file left by an earlier release or another umask.
        _ = fchmod(descriptor, mode_t(PrivateFiles.fileMode))
        guard flock(descriptor, LOCK_EX | LOCK_NB) == 0 else {
            let reason =
                errno == EWOULDBLOCK
                ? "another dynreg server (or another store in this process) has this database open"
                : String(cString: strerror(errno))
            close(descriptor)
            throw StoreError(.unavailable, "cannot lock \(path): \(reason)")
        }
        self.descriptor = Mutex(descriptor)
    }

    /// Lets go of the lock; later calls do nothing.
    func release() {
        descriptor.withLock { descriptor in
            if let open = descriptor { close(open) }
            descriptor = nil
        }
    }

    deinit {
        release()
    }
}
