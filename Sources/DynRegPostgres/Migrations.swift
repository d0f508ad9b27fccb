import Logging
import PostgresNIO

/// Named, append-only migrations: never edit one that shipped, add the next.
///
/// Each runs in its own transaction under an advisory lock, so instances that start together apply it once.
/// Statements are separate because the extended query protocol takes one statement at a time.
enum Migrations {
    struct Migration: Sendable {
        var id: Int
        var name: String
        var statements: [PostgresQuery]
    }

    /// Any constant shared by every dynreg instance on the database: "dynreg" in ASCII.
    static let advisoryLockKey: Int64 = 0x6479_6e72_6567

    static let all: [Migration] = [
        Migration(
            id: 1, name: "v1: products, devices, nonces, events",
            statements: [
                // Names sort by bytes ("C") so listing and cursors match SQLite whatever the database's locale.
                """
                CREATE TABLE products (
                    id text COLLATE "C" PRIMARY KEY,
                    name text NOT NULL,
                    auth_type text NOT NULL,
                    secret text NOT NULL,
                    dynamic_registration boolean NOT NULL,
                    auto_create boolean NOT NULL,
                    device_quota bigint,
                    allow_clockless boolean NOT NULL,
                    -- Kept in step with devices so a quota check is O(1) with millions of devices.
                    device_count bigint NOT NULL DEFAULT 0,
                    created_at timestamptz NOT NULL
                )
                """,
                """
                CREATE TABLE devices (
                    product_id text COLLATE "C" NOT NULL REFERENCES products(id) ON DELETE CASCADE,
                    name text COLLATE "C" NOT NULL,
                    status text NOT NULL,
                    psk text,
                    created_at timestamptz NOT NULL,
                    registered_at timestamptz,
                    activated_at timestamptz,
                    registration_count bigint NOT NULL DEFAULT 0,
                    PRIMARY KEY (product_id, name)
                )
                """,
                """
                CREATE TABLE nonces (
                    product_id text COLLATE "C" NOT NULL,
                    device_name text COLLATE "C" NOT NULL,
                    timestamp bigint NOT NULL,
                    nonce bigint NOT NULL,
                    expires_at timestamptz,
                    PRIMARY KEY (product_id, device_name, timestamp, nonce)
                )
                """,
                "CREATE INDEX nonces_expiry ON nonces (expires_at) WHERE expires_at IS NOT NULL",
                """
                CREATE TABLE events (
                    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                    time timestamptz NOT NULL,
                    product_id text COLLATE "C" NOT NULL,
                    device_name text NOT NULL,
                    outcome text NOT NULL,
                    remote_address text NOT NULL,
                    endpoint text NOT NULL
                )
                """,
                "CREATE INDEX events_by_product ON events (product_id, id)",
            ]),
        Migration(
            id: 2, name: "v2: certificate authorities and device certificates",
            statements: [
                """
                ALTER TABLE products
                    ADD COLUMN ca_certificate text,
                    ADD COLUMN ca_sealed_key text,
                    ADD COLUMN ca_key_type text,
                    ADD COLUMN certificate_validity_days integer
                """,
                """
                CREATE TABLE certificates (
                    serial text COLLATE "C" NOT NULL,
                    product_id text COLLATE "C" NOT NULL,
                    device_name text COLLATE "C" NOT NULL,
                    fingerprint text COLLATE "C" NOT NULL,
                    pem text NOT NULL,
                    not_before timestamptz NOT NULL,
                    not_after timestamptz NOT NULL,
                    issued_at timestamptz NOT NULL,
                    revoked_at timestamptz,
                    PRIMARY KEY (product_id, serial)
                )
                """,
                "CREATE UNIQUE INDEX certificates_by_fingerprint ON certificates (fingerprint)",
                "CREATE INDEX certificates_by_device ON certificates (product_id, device_name)",
            ]),
    ]

    /// Applies what is missing; returns the names applied.
    static func run(on connection: PostgresConnection, logger: Logger) async throws -> [String] {
        var applied: [String] = []
        for migration in all {
            try await connection.query("BEGIN", logger: logger)
            do {
                // Held until COMMIT or ROLLBACK: a second instance waits here, then sees the migration done.
                try await connection.query("SELECT pg_advisory_xact_lock(\(advisoryLockKey))", logger: logger)
                try await connection.query(
                    """
                    CREATE TABLE IF NOT EXISTS dynreg_migrations (
                        id integer PRIMARY KEY,
                        name text NOT NULL,
                        applied_at timestamptz NOT NULL DEFAULT now()
                    )
                    """, logger: logger)
                let done = try await connection.query(
                    "SELECT 1 FROM dynreg_migrations WHERE id = \(migration.id)", logger: logger
                ).collect()
                if done.isEmpty {
                    for statement in migration.statements {
                        try await connection.query(statement, logger: logger)
                    }
                    try await connection.query(
                        "INSERT INTO dynreg_migrations (id, name) VALUES (\(migration.id), \(migration.name))",
                        logger: logger)
                    applied.append(migration.name)
                }
                try await connection.query("COMMIT", logger: logger)
            } catch {
                _ = try? await connection.query("ROLLBACK", logger: logger)
                throw error
            }
        }
        return applied
    }
}
