import ArgumentParser
import DynRegPostgres
import DynRegServer
import DynRegStore
import Foundation
import Logging
import ServiceLifecycle

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Where `serve` and `master-key` find the master key: `DYNREG_MASTER_KEY`, else `<data-dir>/master-key`.
enum MasterKeySource {
    static let environment = "DYNREG_MASTER_KEY"

    static func file(in dataDirectory: URL) -> URL { dataDirectory.appendingPathComponent("master-key") }

    /// The key, and the file it came from (`nil`: the environment); `nil` when there is none yet.
    static func existing(dataDirectory: URL) throws -> (key: MasterKey, file: URL?)? {
        if let value = ProcessInfo.processInfo.environment[environment], !value.isEmpty {
            do {
                return (try MasterKey(encoded: value), nil)
            } catch {
                throw CLIError("\(environment): \(error)")
            }
        }
        let file = file(in: dataDirectory)
        guard let existing = try? String(contentsOf: file, encoding: .utf8) else { return nil }
        do {
            try PrivateFiles.restrictIfExists(file.path)
            return (try MasterKey(encoded: existing), file)
        } catch {
            throw CLIError("\(file.path): \(error)")
        }
    }

    /// Writes `encoded` to `file`, mode 0600, on disk before it returns (the key must outlive a crash that follows).
    static func write(_ encoded: String, to file: URL) throws {
        do {
            try PrivateFiles.restrict(file.path)
            let handle = try FileHandle(forWritingTo: file)
            defer { try? handle.close() }
            try handle.truncate(atOffset: 0)
            try handle.write(contentsOf: Data((encoded + "\n").utf8))
            try handle.synchronize()
        } catch {
            throw CLIError("cannot write the master key to \(file.path): \(error)")
        }
    }
}

struct MasterKeyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "master-key",
        abstract: "The master key that seals product secrets, device psks and CA keys in the store.",
        subcommands: [Rotate.self])

    struct Rotate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Seal every secret in the store again under a new master key, in one transaction.",
            discussion: """
                Stop every server on the store first (a SQLite store is locked while one runs). The current key is \
                DYNREG_MASTER_KEY or <data-dir>/master-key. The new key is written before anything changes: to \
                --new-key-file, or else to <data-dir>/master-key.new; after the commit, a key that came from \
                <data-dir>/master-key is replaced there (the old one is kept as master-key.previous, for backups \
                taken before). With DYNREG_MASTER_KEY, set it to the new key on every instance before restarting.
                """)

        @Option(help: "Directory with the database (SQLite) and the master-key file.") var dataDir = "./dynreg-data"
        @Option(help: "PostgreSQL URL (or DYNREG_DATABASE); default: SQLite in the data directory.")
        var database: String?
        @Option(help: "Write the new key (Base64) here; default: <data-dir>/master-key.new.") var newKeyFile: String?

        func run() async throws {
            var logger = Logger(label: "dynreg")
            logger.logLevel = .warning
            let dataDirectory = URL(fileURLWithPath: dataDir)
            guard let (oldKey, oldFile) = try MasterKeySource.existing(dataDirectory: dataDirectory) else {
                throw CLIError(
                    "no master key: neither \(MasterKeySource.environment) nor \(dataDir)/master-key is set")
            }
            let databaseURL =
                database ?? ProcessInfo.processInfo.environment["DYNREG_DATABASE"].flatMap { $0.isEmpty ? nil : $0 }
            if let databaseURL {
                let configuration: PostgresStore.Configuration
                do {
                    configuration = try PostgresStore.Configuration(url: databaseURL)
                } catch {
                    throw CLIError("cannot use the PostgreSQL database: \(error)")
                }
                try await rotate(
                    PostgresStore(configuration: configuration, masterKey: oldKey, logger: logger), oldKey: oldKey,
                    oldFile: oldFile, dataDirectory: dataDirectory)
            } else {
                let store: SQLiteStore
                do {
                    store = try SQLiteStore(
                        path: dataDirectory.appendingPathComponent("dynreg.sqlite").path, masterKey: oldKey)
                } catch {
                    throw CLIError("cannot open the database in \(dataDir) (stop the server first): \(error)")
                }
                try await rotate(store, oldKey: oldKey, oldFile: oldFile, dataDirectory: dataDirectory)
            }
        }

        private func rotate(
            _ store: some RegistrationStore, oldKey: MasterKey, oldFile: URL?, dataDirectory: URL
        ) async throws {
            let (newKey, encoded) = MasterKey.generate()
            let newFile =
                newKeyFile.map { URL(fileURLWithPath: $0) }
                ?? dataDirectory.appendingPathComponent(
                    "master-key.new")
            let done = try await withThrowingTaskGroup(of: Void.self) { group in
                group.addTask { try await store.run() }
                defer { group.cancelAll() }
                do {
                    _ = try await store.migrate()
                    try await checkMasterKey(oldKey, store: store)
                } catch {
                    throw CLIError("\(error)")
                }
                // Before anything changes: a crash after the commit must not lose the only key that opens the store.
                try? FileManager.default.createDirectory(
                    at: newFile.deletingLastPathComponent(), withIntermediateDirectories: true,
                    attributes: [.posixPermissions: PrivateFiles.directoryMode])
                try MasterKeySource.write(encoded, to: newFile)
                printNow("new master key written to \(newFile.path)")
                return try await store.rotateMasterKey(to: newKey) { progress in
                    if progress.devices == 0 {
                        printNow("re-sealed \(progress.products) products; \(progress.deviceTotal) device psks to go")
                    } else if progress.devices == progress.deviceTotal
                        || progress.devices % (SecretRewrite.pageSize * 100) == 0
                    {
                        printNow("re-sealed \(progress.devices) of \(progress.deviceTotal) device psks")
                    }
                }
            }
            printNow(
                "committed: \(done.products) products and \(done.devices) device psks are sealed under the new key")
            guard let oldFile, newKeyFile == nil else {
                printNow(
                    "set \(MasterKeySource.environment) to the key in \(newFile.path) on every instance, then start them"
                )
                return
            }
            let previous = dataDirectory.appendingPathComponent("master-key.previous")
            guard rename(oldFile.path, previous.path) == 0, rename(newFile.path, oldFile.path) == 0 else {
                throw CLIError(
                    "the store is sealed under the key in \(newFile.path), but it could not replace \(oldFile.path): "
                        + "move it there before starting the server")
            }
            printNow(
                "\(oldFile.path) now holds the new key; the old one is in \(previous.path) (only backups taken before "
                    + "now need it). Back up the new key.")
        }
    }
}
