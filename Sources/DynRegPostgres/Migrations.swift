import DynRegStore
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
        /// What SQL cannot do, in Swift, after the statements and in the same transaction.
        var step: Step? = nil
    }

    enum Step: Sendable, Hashable {
        /// Seal the clear secrets under the master key: see that migration.
        case sealSecrets
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
        Migration(
            id: 3, name: "v3: registration as one statement",
            statements: [
                // The whole decision of PostgresStore.register in one statement, run on its own (autocommit):
                // one round trip instead of eight plus BEGIN and COMMIT, and the product row of a new device is
                // locked only for the time the server takes to run it and commit. `outcomes` carries the
                // protocol's codes so they are spelled in one place; the decision is an index into it.
                """
                CREATE FUNCTION dynreg_register(
                    p_product_id text, p_device_name text, p_timestamp bigint, p_nonce bigint,
                    p_expires_at timestamptz, p_psk text, p_now timestamptz,
                    p_serial text, p_fingerprint text, p_pem text, p_not_before timestamptz,
                    p_not_after timestamptz,
                    p_event_product_id text, p_event_device_name text, p_remote_address text, p_endpoint text,
                    p_outcomes text[]
                ) RETURNS TABLE (
                    decision integer, d_status text, d_psk text, d_created_at timestamptz,
                    d_registered_at timestamptz, d_activated_at timestamptz, d_registration_count bigint
                ) LANGUAGE plpgsql AS $body$
                DECLARE
                    -- 1 Success, 2 product not exist, 3 device not exist, 4 quota, 5 activated, 6 nonce reused
                    v_decision integer := 1;
                    v_exists boolean;
                    v_device devices%ROWTYPE;
                    v_auto_create boolean;
                    v_quota bigint;
                    v_count bigint;
                BEGIN
                    -- An existing device is re-registered under its own row lock: no product-wide wait.
                    SELECT * INTO v_device FROM devices d
                        WHERE d.product_id = p_product_id AND d.name = p_device_name FOR UPDATE;
                    v_exists := FOUND;
                    IF NOT v_exists THEN
                        -- A new device changes the count: new devices of the product queue here.
                        SELECT p.auto_create, p.device_quota, p.device_count INTO v_auto_create, v_quota, v_count
                            FROM products p WHERE p.id = p_product_id FOR NO KEY UPDATE;
                        IF NOT FOUND THEN
                            v_decision := 2;
                        ELSE
                            -- It may have been created while this statement waited for the product.
                            SELECT * INTO v_device FROM devices d
                                WHERE d.product_id = p_product_id AND d.name = p_device_name FOR UPDATE;
                            v_exists := FOUND;
                            IF NOT v_exists AND NOT v_auto_create THEN
                                v_decision := 3;
                            ELSIF NOT v_exists AND v_quota IS NOT NULL AND v_count >= v_quota THEN
                                v_decision := 4;
                            END IF;
                        END IF;
                    END IF;
                    IF v_decision = 1 AND v_exists AND v_device.status = 'activated' THEN
                        v_decision := 5;
                    END IF;
                    IF v_decision = 1 THEN
                        INSERT INTO nonces (product_id, device_name, timestamp, nonce, expires_at)
                            VALUES (p_product_id, p_device_name, p_timestamp, p_nonce, p_expires_at)
                            ON CONFLICT DO NOTHING;
                        IF NOT FOUND THEN
                            v_decision := 6;
                        END IF;
                    END IF;
                    IF v_decision = 1 THEN
                        IF v_exists THEN
                            UPDATE devices d SET status = 'registered', psk = p_psk, registered_at = p_now,
                                registration_count = d.registration_count + 1
                                WHERE d.product_id = p_product_id AND d.name = p_device_name
                                RETURNING * INTO v_device;
                        ELSE
                            INSERT INTO devices (product_id, name, status, psk, created_at, registered_at,
                                    registration_count)
                                VALUES (p_product_id, p_device_name, 'registered', p_psk, p_now, p_now, 1)
                                RETURNING * INTO v_device;
                            UPDATE products p SET device_count = p.device_count + 1 WHERE p.id = p_product_id;
                        END IF;
                        IF p_serial IS NOT NULL THEN
                            UPDATE certificates c SET revoked_at = p_now
                                WHERE c.product_id = p_product_id AND c.device_name = p_device_name
                                    AND c.revoked_at IS NULL;
                            INSERT INTO certificates (serial, product_id, device_name, fingerprint, pem, not_before,
                                    not_after, issued_at)
                                VALUES (p_serial, p_product_id, p_device_name, p_fingerprint, p_pem, p_not_before,
                                    p_not_after, p_now);
                        END IF;
                    END IF;
                    INSERT INTO events (time, product_id, device_name, outcome, remote_address, endpoint)
                        VALUES (p_now, p_event_product_id, p_event_device_name, p_outcomes[v_decision],
                            p_remote_address, p_endpoint);
                    IF v_decision = 1 THEN
                        RETURN QUERY SELECT v_decision, v_device.status, v_device.psk, v_device.created_at,
                            v_device.registered_at, v_device.activated_at, v_device.registration_count;
                    ELSE
                        RETURN QUERY SELECT v_decision, NULL::text, NULL::text, NULL::timestamptz,
                            NULL::timestamptz, NULL::timestamptz, NULL::bigint;
                    END IF;
                END
                $body$
                """
            ]),
        Migration(
            id: 4, name: "v4: registration answers a symbolic outcome",
            statements: [
                // v3's function answers an index into an array the caller passes; this one answers the outcome
                // itself. v3's stays (a different signature, so an overload): an instance of the previous version
                // that shares the database keeps working while the instances are upgraded one by one.
                //
                // Mirrors RegistrationRules.decide (Sources/DynRegStore/RegistrationRules.swift): the same checks
                // in the same order, answering the same symbols (Success or the protocol's error code, which the
                // audit log keeps). A device row implies its product (foreign key), so an existing device skips
                // the product check and never waits for the product row's lock.
                """
                CREATE FUNCTION dynreg_register(
                    p_product_id text, p_device_name text, p_timestamp bigint, p_nonce bigint,
                    p_expires_at timestamptz, p_psk text, p_now timestamptz,
                    p_serial text, p_fingerprint text, p_pem text, p_not_before timestamptz,
                    p_not_after timestamptz,
                    p_event_product_id text, p_event_device_name text, p_remote_address text, p_endpoint text
                ) RETURNS TABLE (
                    r_outcome text, d_status text, d_psk text, d_created_at timestamptz,
                    d_registered_at timestamptz, d_activated_at timestamptz, d_registration_count bigint
                ) LANGUAGE plpgsql AS $body$
                -- Mirrors RegistrationRules.decide in dynreg's Swift sources (DynRegStore): change both together.
                DECLARE
                    -- NULL until a rule decides.
                    v_outcome text;
                    v_exists boolean;
                    v_device devices%ROWTYPE;
                    v_auto_create boolean;
                    v_quota bigint;
                    v_count bigint;
                BEGIN
                    -- An existing device is re-registered under its own row lock: no product-wide wait.
                    SELECT * INTO v_device FROM devices d
                        WHERE d.product_id = p_product_id AND d.name = p_device_name FOR UPDATE;
                    v_exists := FOUND;
                    IF NOT v_exists THEN
                        -- A new device changes the count: new devices of the product queue here.
                        SELECT p.auto_create, p.device_quota, p.device_count INTO v_auto_create, v_quota, v_count
                            FROM products p WHERE p.id = p_product_id FOR NO KEY UPDATE;
                        IF NOT FOUND THEN
                            v_outcome := 'ResourceNotFound.ProductNotExist';
                        ELSE
                            -- It may have been created while this statement waited for the product.
                            SELECT * INTO v_device FROM devices d
                                WHERE d.product_id = p_product_id AND d.name = p_device_name FOR UPDATE;
                            v_exists := FOUND;
                        END IF;
                    END IF;
                    IF v_outcome IS NULL AND v_exists AND v_device.status = 'activated' THEN
                        v_outcome := 'FailedOperation.DeviceAlreadyActivated';
                    ELSIF v_outcome IS NULL AND NOT v_exists AND NOT v_auto_create THEN
                        v_outcome := 'ResourceNotFound.DeviceNotExist';
                    ELSIF v_outcome IS NULL AND NOT v_exists AND v_quota IS NOT NULL AND v_count >= v_quota THEN
                        v_outcome := 'LimitExceeded.DeviceQuota';
                    END IF;
                    -- Replay last: the pair is recorded only with the credential it admits.
                    IF v_outcome IS NULL THEN
                        INSERT INTO nonces (product_id, device_name, timestamp, nonce, expires_at)
                            VALUES (p_product_id, p_device_name, p_timestamp, p_nonce, p_expires_at)
                            ON CONFLICT DO NOTHING;
                        IF FOUND THEN
                            v_outcome := 'Success';
                        ELSE
                            v_outcome := 'AuthFailure.NonceReused';
                        END IF;
                    END IF;
                    IF v_outcome = 'Success' THEN
                        IF v_exists THEN
                            UPDATE devices d SET status = 'registered', psk = p_psk, registered_at = p_now,
                                registration_count = d.registration_count + 1
                                WHERE d.product_id = p_product_id AND d.name = p_device_name
                                RETURNING * INTO v_device;
                        ELSE
                            INSERT INTO devices (product_id, name, status, psk, created_at, registered_at,
                                    registration_count)
                                VALUES (p_product_id, p_device_name, 'registered', p_psk, p_now, p_now, 1)
                                RETURNING * INTO v_device;
                            UPDATE products p SET device_count = p.device_count + 1 WHERE p.id = p_product_id;
                        END IF;
                        IF p_serial IS NOT NULL THEN
                            UPDATE certificates c SET revoked_at = p_now
                                WHERE c.product_id = p_product_id AND c.device_name = p_device_name
                                    AND c.revoked_at IS NULL;
                            INSERT INTO certificates (serial, product_id, device_name, fingerprint, pem, not_before,
                                    not_after, issued_at)
                                VALUES (p_serial, p_product_id, p_device_name, p_fingerprint, p_pem, p_not_before,
                                    p_not_after, p_now);
                        END IF;
                    END IF;
                    INSERT INTO events (time, product_id, device_name, outcome, remote_address, endpoint)
                        VALUES (p_now, p_event_product_id, p_event_device_name, v_outcome, p_remote_address,
                            p_endpoint);
                    IF v_outcome = 'Success' THEN
                        RETURN QUERY SELECT v_outcome, v_device.status, v_device.psk, v_device.created_at,
                            v_device.registered_at, v_device.activated_at, v_device.registration_count;
                    ELSE
                        RETURN QUERY SELECT v_outcome, NULL::text, NULL::text, NULL::timestamptz,
                            NULL::timestamptz, NULL::timestamptz, NULL::bigint;
                    END IF;
                END
                $body$
                """
            ]),
        Migration(
            id: 5, name: "v5: answers for retries, trusted device CAs, topic rules, device key types",
            statements: [
                """
                ALTER TABLE nonces
                    ADD COLUMN request_digest bytea,
                    ADD COLUMN answer_length bigint,
                    ADD COLUMN answer_payload text,
                    ADD COLUMN answer_created boolean,
                    ADD COLUMN answer_registration bigint
                """,
                """
                ALTER TABLE products
                    ADD COLUMN trusted_ca_certificates text,
                    ADD COLUMN topic_rules text,
                    ADD COLUMN device_key_type text
                """,
                // v4's function decides; this one records what a byte-identical retry is answered with, or
                // answers a retry with it. The retry rule mirrors RegistrationRules.isRetry (DynRegStore).
                """
                CREATE FUNCTION dynreg_register_repeatable(
                    p_product_id text, p_device_name text, p_timestamp bigint, p_nonce bigint,
                    p_expires_at timestamptz, p_psk text, p_now timestamptz,
                    p_serial text, p_fingerprint text, p_pem text, p_not_before timestamptz,
                    p_not_after timestamptz,
                    p_event_product_id text, p_event_device_name text, p_remote_address text, p_endpoint text,
                    p_request_digest bytea, p_answer_length bigint, p_answer_payload text
                ) RETURNS TABLE (
                    r_outcome text, d_status text, d_psk text, d_created_at timestamptz,
                    d_registered_at timestamptz, d_activated_at timestamptz, d_registration_count bigint,
                    r_created boolean, r_answer_length bigint, r_answer_payload text
                ) LANGUAGE plpgsql AS $body$
                -- Mirrors RegistrationRules.isRetry in dynreg's Swift sources (DynRegStore): change both together.
                DECLARE
                    v record;
                    v_created boolean;
                    v_nonce nonces%ROWTYPE;
                    v_status text;
                    v_count bigint;
                BEGIN
                    SELECT * INTO v FROM dynreg_register(p_product_id, p_device_name, p_timestamp, p_nonce,
                        p_expires_at, p_psk, p_now, p_serial, p_fingerprint, p_pem, p_not_before, p_not_after,
                        p_event_product_id, p_event_device_name, p_remote_address, p_endpoint);
                    IF v.r_outcome = 'Success' THEN
                        -- Only a registration that inserts the device writes created_at = p_now with count 1.
                        v_created := v.d_registration_count = 1 AND v.d_created_at = p_now;
                        UPDATE nonces n SET request_digest = p_request_digest, answer_length = p_answer_length,
                                answer_payload = p_answer_payload, answer_created = v_created,
                                answer_registration = v.d_registration_count
                            WHERE n.product_id = p_product_id AND n.device_name = p_device_name
                                AND n.timestamp = p_timestamp AND n.nonce = p_nonce;
                        RETURN QUERY SELECT v.r_outcome, v.d_status, v.d_psk, v.d_created_at, v.d_registered_at,
                            v.d_activated_at, v.d_registration_count, v_created, NULL::bigint, NULL::text;
                        RETURN;
                    END IF;
                    IF v.r_outcome = 'AuthFailure.NonceReused' THEN
                        SELECT * INTO v_nonce FROM nonces n
                            WHERE n.product_id = p_product_id AND n.device_name = p_device_name
                                AND n.timestamp = p_timestamp AND n.nonce = p_nonce;
                        SELECT d.status, d.registration_count INTO v_status, v_count FROM devices d
                            WHERE d.product_id = p_product_id AND d.name = p_device_name;
                        IF v_nonce.request_digest = p_request_digest AND v_status = 'registered'
                            AND v_nonce.answer_registration = v_count THEN
                            -- dynreg_register logged a refusal a moment ago, in this transaction.
                            UPDATE events SET outcome = 'Retry'
                                WHERE id = currval(pg_get_serial_sequence('events', 'id'));
                            RETURN QUERY SELECT 'Retry'::text, NULL::text, NULL::text, NULL::timestamptz,
                                NULL::timestamptz, NULL::timestamptz, NULL::bigint, v_nonce.answer_created,
                                v_nonce.answer_length, v_nonce.answer_payload;
                            RETURN;
                        END IF;
                    END IF;
                    RETURN QUERY SELECT v.r_outcome, NULL::text, NULL::text, NULL::timestamptz, NULL::timestamptz,
                        NULL::timestamptz, NULL::bigint, NULL::boolean, NULL::bigint, NULL::text;
                END
                $body$
                """,
            ]),
        // Refusals before the product secret is proven are counted per minute (RefusalCount), not a row each.
        Migration(
            id: 6, name: "v6: refusals counted per minute",
            statements: [
                """
                CREATE TABLE refusals (
                    minute bigint NOT NULL,
                    product_id text NOT NULL,
                    endpoint text NOT NULL,
                    outcome text NOT NULL,
                    remote_address text NOT NULL,
                    count bigint NOT NULL,
                    PRIMARY KEY (minute, product_id, endpoint, outcome, remote_address)
                )
                """
            ]),
        Migration(
            id: 7, name: "v7: product limits, lockouts, devices by creation time",
            statements: [
                """
                CREATE TABLE product_limits (
                    product_id text PRIMARY KEY REFERENCES products(id) ON DELETE CASCADE,
                    limits text NOT NULL
                )
                """,
                """
                CREATE TABLE lockouts (
                    product_id text NOT NULL REFERENCES products(id) ON DELETE CASCADE,
                    remote_address text NOT NULL,
                    failures bigint NOT NULL,
                    locked_at timestamptz NOT NULL,
                    locked_until timestamptz NOT NULL,
                    PRIMARY KEY (product_id, remote_address)
                )
                """,
                "CREATE INDEX devices_by_created ON devices (product_id, created_at)",
            ]),
        // Product secrets and psks were stored in clear. Sealing them needs the master key, which the database must
        // never see (pgcrypto would put it in statements, logs and pg_stat_activity), so this migration has no SQL: its
        // step runs the pass a key rotation runs (`rewriteSecrets`) from Swift, inside the migration's transaction and
        // under its advisory lock. So the database is wholly clear or wholly sealed, a second instance starting at the
        // same time waits and then finds it done, and a failure leaves it as it was. The step first opens the CA keys
        // with its key and fails without sealing anything if they do not open: the secrets must be sealed under the key
        // the CA keys already are. The columns keep their names and now hold `v1:` values.
        //
        // Not a rolling upgrade: an instance of an earlier release reads a sealed secret as the secret itself and
        // refuses every signature. Stop them all, then start this release (docs/operations.md).
        Migration(
            id: 8, name: "v8: product secrets and psks sealed under the master key", statements: [],
            step: .sealSecrets),
        // Group commit (CommitBatches): many registrations in one transaction and one round
        // trip, so a product's row lock (the quota's) is taken once per batch instead of once per new device.
        // Each attempt still goes through v5's dynreg_register_repeatable, so the rules stay in one place and an
        // instance of the previous release keeps working beside this one.
        Migration(
            id: 9, name: "v9: registrations in batches",
            statements: [
                // The lock order of every writer holds: the products this batch may add devices to are locked
                // first, in one order ("C"), before any device; then the attempts run sorted by product and device
                // (arrival order for the same device), so two batches lock the device rows they share in the
                // same order too. A product whose device was deleted after the first lookup is locked late, by
                // dynreg_register, and can deadlock: PostgreSQL aborts one batch, which the store retries.
                // The answers come back in attempt order (`b_attempt`, 1-based).
                """
                CREATE FUNCTION dynreg_register_batch(
                    p_product_ids text[], p_device_names text[], p_timestamps bigint[], p_nonces bigint[],
                    p_expires_at timestamptz[], p_psks text[], p_nows timestamptz[],
                    p_serials text[], p_fingerprints text[], p_pems text[], p_not_befores timestamptz[],
                    p_not_afters timestamptz[],
                    p_event_product_ids text[], p_event_device_names text[], p_remote_addresses text[],
                    p_endpoints text[],
                    p_request_digests bytea[], p_answer_lengths bigint[], p_answer_payloads text[]
                ) RETURNS TABLE (
                    b_attempt integer, b_outcome text, b_status text, b_psk text, b_created_at timestamptz,
                    b_registered_at timestamptz, b_activated_at timestamptz, b_registration_count bigint,
                    b_created boolean, b_answer_length bigint, b_answer_payload text
                ) LANGUAGE plpgsql AS $body$
                DECLARE
                    v_order integer[];
                    v_index integer;
                    v record;
                BEGIN
                    PERFORM 1 FROM products p
                        WHERE p.id IN (
                            SELECT a.product_id FROM unnest(p_product_ids, p_device_names) AS a(product_id, name)
                            WHERE NOT EXISTS (SELECT 1 FROM devices d
                                WHERE d.product_id = a.product_id AND d.name = a.name))
                        ORDER BY p.id COLLATE "C" FOR NO KEY UPDATE;
                    SELECT array_agg(a.i ORDER BY a.product_id COLLATE "C", a.name COLLATE "C", a.i) INTO v_order
                        FROM unnest(p_product_ids, p_device_names) WITH ORDINALITY AS a(product_id, name, i);
                    FOREACH v_index IN ARRAY v_order LOOP
                        SELECT * INTO v FROM dynreg_register_repeatable(p_product_ids[v_index],
                            p_device_names[v_index], p_timestamps[v_index], p_nonces[v_index],
                            p_expires_at[v_index], p_psks[v_index], p_nows[v_index], p_serials[v_index],
                            p_fingerprints[v_index], p_pems[v_index], p_not_befores[v_index],
                            p_not_afters[v_index], p_event_product_ids[v_index], p_event_device_names[v_index],
                            p_remote_addresses[v_index], p_endpoints[v_index], p_request_digests[v_index],
                            p_answer_lengths[v_index], p_answer_payloads[v_index]);
                        b_attempt := v_index;
                        b_outcome := v.r_outcome;
                        b_status := v.d_status;
                        b_psk := v.d_psk;
                        b_created_at := v.d_created_at;
                        b_registered_at := v.d_registered_at;
                        b_activated_at := v.d_activated_at;
                        b_registration_count := v.d_registration_count;
                        b_created := v.r_created;
                        b_answer_length := v.r_answer_length;
                        b_answer_payload := v.r_answer_payload;
                        RETURN NEXT;
                    END LOOP;
                END
                $body$
                """
            ]),
        // Every instance keeps broker logins' devices in memory (LoginListener): a committed change of a device row
        // tells them all which device to forget, on the channel `dynreg_devices`, as `product id/device name` (no
        // product id holds a `/`). Per statement, so that one changing many rows (a product's deletion, a page of a
        // master-key rotation) sends one `*`, forget everything, rather than a notification per device. PostgreSQL
        // delivers a NOTIFY after its transaction commits, never for a rollback. INSERT is left out: a cache never
        // holds a device that does not exist, and the deletion before a re-creation notified already. Certificates
        // are read from their table at every login, so their revocation needs nothing here.
        Migration(
            id: 10, name: "v10: device changes notify every instance's login cache",
            statements: [
                """
                CREATE FUNCTION dynreg_notify_devices() RETURNS trigger LANGUAGE plpgsql AS $body$
                DECLARE
                    v_key text;
                BEGIN
                    IF (SELECT count(*) FROM (SELECT 1 FROM changed LIMIT 65) AS first_rows) > 64 THEN
                        PERFORM pg_notify('dynreg_devices', '*');
                    ELSE
                        FOR v_key IN SELECT DISTINCT product_id || '/' || name FROM changed LOOP
                            PERFORM pg_notify('dynreg_devices', v_key);
                        END LOOP;
                    END IF;
                    RETURN NULL;
                END
                $body$
                """,
                // The old rows: their keys are the ones the caches hold.
                """
                CREATE TRIGGER devices_notify_update AFTER UPDATE ON devices REFERENCING OLD TABLE AS changed
                    FOR EACH STATEMENT EXECUTE FUNCTION dynreg_notify_devices()
                """,
                """
                CREATE TRIGGER devices_notify_delete AFTER DELETE ON devices REFERENCING OLD TABLE AS changed
                    FOR EACH STATEMENT EXECUTE FUNCTION dynreg_notify_devices()
                """,
            ]),
    ]

    /// Applies what is missing, up to the migration `lastId` (tests build a previous release's database with it);
    /// returns the names applied. `masterKey` is for the steps that seal.
    static func run(
        on connection: PostgresConnection, masterKey: MasterKey, upTo lastId: Int = .max, logger: Logger
    ) async throws -> [String] {
        var applied: [String] = []
        for migration in all where migration.id <= lastId {
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
                    switch migration.step {
                    case .sealSecrets?:
                        _ = try await rewriteSecrets(connection, .sealing(under: masterKey), logger: logger)
                    case nil: break
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

    /// Rewrites every CA key, product secret and psk as `rewrite` says, in the caller's transaction: products, then
    /// devices by primary key, ``SecretRewrite/pageSize`` at a time (each page read whole before it is written). The
    /// SQLite store's `rewriteSecrets` is the same pass.
    static func rewriteSecrets(
        _ connection: PostgresConnection, _ rewrite: SecretRewrite,
        progress: @Sendable (SecretRewriteProgress) -> Void = { _ in }, logger: Logger
    ) async throws -> SecretRewriteProgress {
        var done = SecretRewriteProgress()
        let products = try await connection.query(
            "SELECT id, secret, ca_sealed_key FROM products ORDER BY id FOR UPDATE", logger: logger
        ).collect()
        for row in products {
            let (id, secret, caKey) = try row.decode((String, String, String?).self)
            let newCAKey = try caKey.flatMap { try rewrite.caKey($0, productId: id) }
            let newSecret = try rewrite.secret(secret, productId: id)
            try await connection.query(
                """
                UPDATE products SET secret = \(newSecret),
                    ca_sealed_key = COALESCE(\(newCAKey), ca_sealed_key)
                WHERE id = \(id)
                """, logger: logger)
            done.products += 1
        }
        for row in try await connection.query("SELECT count(*) FROM devices WHERE psk IS NOT NULL", logger: logger)
            .collect()
        {
            done.deviceTotal = try row.decode(Int.self)
        }
        progress(done)
        var after = ("", "")
        while true {
            let page = try await connection.query(
                """
                SELECT product_id, name, psk FROM devices
                WHERE psk IS NOT NULL AND (product_id, name) > (\(after.0), \(after.1))
                ORDER BY product_id, name LIMIT \(SecretRewrite.pageSize) FOR UPDATE
                """, logger: logger
            ).collect()
            guard !page.isEmpty else { break }
            // One statement per page: the new values as two parallel arrays, joined to the rows by key.
            var keys: (products: [String], names: [String], psks: [String]) = ([], [], [])
            for row in page {
                let (productId, name, psk) = try row.decode((String, String, String).self)
                keys.products.append(productId)
                keys.names.append(name)
                keys.psks.append(try rewrite.psk(psk, productId: productId, deviceName: name))
                after = (productId, name)
            }
            try await connection.query(
                """
                UPDATE devices d SET psk = n.psk
                FROM unnest(\(keys.products)::text[], \(keys.names)::text[], \(keys.psks)::text[])
                    AS n(product_id, name, psk)
                WHERE d.product_id = n.product_id AND d.name = n.name
                """, logger: logger)
            done.devices += page.count
            progress(done)
        }
        return done
    }
}
