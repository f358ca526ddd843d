"""The SQLite schema, as migrations: each entry upgrades the schema by one version.

`PRAGMA user_version` records the last one applied; start-up applies the rest in order.
"""

from __future__ import annotations

MIGRATIONS: tuple[str, ...] = (
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
)
