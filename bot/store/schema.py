"""The schema of each backend, as migrations: each entry upgrades the schema by one version.

Start-up applies the ones not yet applied, in order, each in the transaction that records
it: SQLite keeps the version in `PRAGMA user_version`, PostgreSQL in `schema_migrations`
(under an advisory lock, so processes of a fleet starting together migrate once). A new
version is a new entry at the end of both tuples; entries are never edited once released.
"""

from __future__ import annotations

SQLITE_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE groups (
        key TEXT PRIMARY KEY,
        members TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '{}',
        created_at REAL NOT NULL,
        updated_at REAL NOT NULL
    );
    CREATE TABLE inbound (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        message_uuid TEXT NOT NULL UNIQUE,
        group_key TEXT NOT NULL REFERENCES groups(key),
        body BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'processing', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until REAL,
        owner TEXT,
        route TEXT,
        error TEXT,
        received_at REAL NOT NULL,
        processed_at REAL
    );
    CREATE INDEX inbound_open ON inbound (group_key, seq)
        WHERE state IN ('pending', 'processing');
    CREATE TABLE outbound (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        broadcast_id TEXT NOT NULL,
        inbound_uuid TEXT,
        group_key TEXT NOT NULL REFERENCES groups(key),
        recipient TEXT NOT NULL,
        client_ref TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        owner TEXT,
        message_uuid TEXT UNIQUE,
        error TEXT,
        status TEXT,
        status_error TEXT,
        status_at REAL,
        price TEXT,
        currency TEXT,
        created_at REAL NOT NULL,
        sent_at REAL,
        finished_at REAL,
        UNIQUE (broadcast_id, recipient)
    );
    CREATE INDEX outbound_open ON outbound (group_key, recipient, id)
        WHERE state IN ('pending', 'sending');
    CREATE INDEX outbound_broadcast ON outbound (broadcast_id);
    CREATE TABLE statuses (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_uuid TEXT NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at REAL NOT NULL
    );
    CREATE INDEX statuses_message ON statuses (message_uuid);
    CREATE TABLE opt_outs (
        number TEXT PRIMARY KEY,
        opted_out_at REAL NOT NULL,
        source TEXT NOT NULL
    );
    CREATE TABLE webhook_tokens (
        jti TEXT PRIMARY KEY,
        seen_at REAL NOT NULL
    );
    CREATE INDEX webhook_tokens_seen ON webhook_tokens (seen_at);
    """,
    # v2: the queues in arrival order, open items only, so that a claim reads the oldest
    # few instead of grouping every open item to find each group's head.
    """
    CREATE INDEX inbound_queue ON inbound (seq) WHERE state IN ('pending', 'processing');
    CREATE INDEX outbound_queue ON outbound (id) WHERE state IN ('pending', 'sending');
    """,
    # v3: a broadcast's rows are found by the unique (broadcast_id, recipient) index; one
    # index fewer to update for every message queued.
    "DROP INDEX IF EXISTS outbound_broadcast;",
    # v4: a status finds its message by client_ref, which the Messages API puts in every
    # status, so the API's message_uuid needs no index of its own: each send recorded wrote
    # a page of it at a random place. SQLite drops a UNIQUE constraint only by building the
    # table anew; the id sequence carries over, so that no id is ever given twice.
    """
    CREATE TABLE outbound_v4 (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        broadcast_id TEXT NOT NULL,
        inbound_uuid TEXT,
        group_key TEXT NOT NULL REFERENCES groups(key),
        recipient TEXT NOT NULL,
        client_ref TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL NOT NULL,
        lease_until REAL,
        owner TEXT,
        message_uuid TEXT,
        error TEXT,
        status TEXT,
        status_error TEXT,
        status_at REAL,
        price TEXT,
        currency TEXT,
        created_at REAL NOT NULL,
        sent_at REAL,
        finished_at REAL,
        UNIQUE (broadcast_id, recipient)
    );
    INSERT INTO outbound_v4 SELECT * FROM outbound;
    DELETE FROM sqlite_sequence WHERE name = 'outbound_v4';
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'outbound_v4', seq FROM sqlite_sequence WHERE name = 'outbound';
    DROP TABLE outbound;
    ALTER TABLE outbound_v4 RENAME TO outbound;
    CREATE INDEX outbound_open ON outbound (group_key, recipient, id)
        WHERE state IN ('pending', 'sending');
    CREATE INDEX outbound_queue ON outbound (id) WHERE state IN ('pending', 'sending');
    """,
)

POSTGRES_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE groups (
        key TEXT PRIMARY KEY,
        members TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT '{}',
        created_at DOUBLE PRECISION NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    );
    CREATE TABLE inbound (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_uuid TEXT NOT NULL UNIQUE,
        group_key TEXT NOT NULL REFERENCES groups(key),
        body BYTEA NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'processing', 'done', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        lease_until DOUBLE PRECISION,
        owner TEXT,
        route TEXT,
        error TEXT,
        received_at DOUBLE PRECISION NOT NULL,
        processed_at DOUBLE PRECISION
    );
    CREATE INDEX inbound_open ON inbound (group_key, seq)
        WHERE state IN ('pending', 'processing');
    CREATE TABLE outbound (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        broadcast_id TEXT NOT NULL,
        inbound_uuid TEXT,
        group_key TEXT NOT NULL REFERENCES groups(key),
        recipient TEXT NOT NULL,
        client_ref TEXT NOT NULL UNIQUE,
        body TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'sending', 'sent', 'failed')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION NOT NULL,
        lease_until DOUBLE PRECISION,
        owner TEXT,
        message_uuid TEXT UNIQUE,
        error TEXT,
        status TEXT,
        status_error TEXT,
        status_at DOUBLE PRECISION,
        price TEXT,
        currency TEXT,
        created_at DOUBLE PRECISION NOT NULL,
        sent_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        UNIQUE (broadcast_id, recipient)
    );
    CREATE INDEX outbound_open ON outbound (group_key, recipient, id)
        WHERE state IN ('pending', 'sending');
    CREATE INDEX outbound_broadcast ON outbound (broadcast_id);
    CREATE INDEX outbound_recipient_pending ON outbound (recipient) WHERE state = 'pending';
    CREATE TABLE statuses (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        message_uuid TEXT NOT NULL,
        status TEXT NOT NULL,
        body TEXT NOT NULL,
        received_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX statuses_message ON statuses (message_uuid);
    CREATE TABLE opt_outs (
        number TEXT PRIMARY KEY,
        opted_out_at DOUBLE PRECISION NOT NULL,
        source TEXT NOT NULL
    );
    CREATE TABLE webhook_tokens (
        jti TEXT PRIMARY KEY,
        seen_at DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX webhook_tokens_seen ON webhook_tokens (seen_at);
    CREATE TABLE send_slots (
        key TEXT PRIMARY KEY,
        next_at DOUBLE PRECISION NOT NULL
    );
    """,
    """
    CREATE INDEX inbound_queue ON inbound (seq) WHERE state IN ('pending', 'processing');
    CREATE INDEX outbound_queue ON outbound (id) WHERE state IN ('pending', 'sending');
    """,
    # v3: a broadcast's rows are found by the unique (broadcast_id, recipient) index; one
    # index fewer to update for every message queued.
    "DROP INDEX IF EXISTS outbound_broadcast;",
    # v4: statuses find their message by client_ref (see SQLite's v4).
    "ALTER TABLE outbound DROP CONSTRAINT IF EXISTS outbound_message_uuid_key;",
)
