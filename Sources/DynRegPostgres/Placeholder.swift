// PostgreSQL store: see PostgresStore.swift.
