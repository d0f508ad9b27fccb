package import DynRegStore
package import Foundation
package import Testing

/// Looks for secrets in what the server wrote to disk (a database file, its WAL, a dump).
package enum SecretSearch {
    /// The forms a secret could take in a file: its UTF-8, the Base64 of that, and, for a psk (itself Base64), the
    /// bytes it encodes.
    package static func forms(of secret: String) -> [(form: String, bytes: Data)] {
        var forms = [("raw", Data(secret.utf8)), ("Base64", Data(Data(secret.utf8).base64EncodedString().utf8))]
        if let decoded = Data(base64Encoded: secret), decoded.count >= 8 { forms.append(("decoded", decoded)) }
        return forms
    }

    /// Which forms of which `secrets` (named by the key) `data` holds, as `"name (form) in place"`.
    package static func found(_ secrets: [String: String], in data: Data, place: String) -> [String] {
        secrets.sorted { $0.key < $1.key }.flatMap { name, secret in
            forms(of: secret).filter { data.range(of: $0.bytes) != nil }.map { "\(name) (\($0.form)) in \(place)" }
        }
    }

    /// `found` over the SQLite database at `path` and its `-wal` and `-shm` files, those that exist.
    package static func foundInSQLite(_ secrets: [String: String], path: String) throws -> [String] {
        try ["", "-wal", "-shm"].flatMap { suffix -> [String] in
            guard FileManager.default.fileExists(atPath: path + suffix) else { return [] }
            let data = try Data(contentsOf: URL(fileURLWithPath: path + suffix))
            return found(secrets, in: data, place: "dynreg.sqlite" + suffix)
        }
    }

    /// The secrets an upgrade test looks for, each new: the previous release's product secret and psk (written in
    /// clear before the upgrade), and what ``useAfterUpgrade(_:_:)`` writes.
    package static func upgradeSecrets() -> [String: String] {
        [
            "old secret": randomSecret(), "old psk": randomPSK(), "new secret": randomSecret(),
            "rotated secret": randomSecret(), "new psk": randomPSK(),
        ]
    }

    /// After an upgrade sealed product `PSEALOLD01` (with device `d1`): checks that the store opens the old secrets
    /// as they were, then writes a product secret, a rotated secret and a psk as this release does.
    package static func useAfterUpgrade(
        _ store: some RegistrationStore, _ secrets: [String: String], sourceLocation: SourceLocation = #_sourceLocation
    ) async throws {
        #expect(
            try await store.product(id: "PSEALOLD01")?.secret == secrets["old secret"], sourceLocation: sourceLocation)
        #expect(
            try await store.device(productId: "PSEALOLD01", deviceName: "d1")?.psk == secrets["old psk"],
            sourceLocation: sourceLocation)
        var product = StoreSamples.product("PSEALNEW01")
        product.secret = secrets["new secret"]!
        #expect(try await store.createProduct(product).secret == secrets["new secret"], sourceLocation: sourceLocation)
        _ = try await store.rotateProductSecret(id: "PSEALOLD01", newSecret: secrets["rotated secret"]!)
        let decision = try await store.register(
            StoreSamples.attempt("PSEALNEW01", "d2", nonce: 1, psk: secrets["new psk"]!))
        #expect(StoreSamples.issued(decision)?.psk == secrets["new psk"], sourceLocation: sourceLocation)
        #expect(
            try await store.device(productId: "PSEALNEW01", deviceName: "d2")?.psk == secrets["new psk"],
            sourceLocation: sourceLocation)
    }

    /// 24 random letters and digits: a product secret nothing else in a file could contain by chance.
    package static func randomSecret() -> String {
        let alphabet = Array("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789")
        return String((0..<24).map { _ in alphabet.randomElement()! })
    }

    /// A psk as the server makes one: Base64 of 16 random bytes.
    package static func randomPSK() -> String {
        Data((0..<16).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
    }
}
