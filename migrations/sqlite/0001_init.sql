-- Ringfort schema v1 (SQLite). Times are unix seconds (INTEGER).
-- Extensions: SIP accounts. Only digest HA1 values are stored, never a cleartext password.
CREATE TABLE extensions (
    number       TEXT    NOT NULL PRIMARY KEY,
    display_name TEXT    NOT NULL DEFAULT '',
    realm        TEXT    NOT NULL,
    ha1_md5      TEXT    NOT NULL,
    ha1_sha256   TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

-- Location service: one row per registered contact of an AOR (extension).
-- `path` holds the RFC 3327 Path values, each terminated by '\n' ('\' and newline escaped).
CREATE TABLE bindings (
    aor          TEXT    NOT NULL REFERENCES extensions (number) ON DELETE CASCADE,
    binding_key  TEXT    NOT NULL,
    contact_uri  TEXT    NOT NULL,
    q            REAL,
    expires_at   INTEGER NOT NULL,
    call_id      TEXT    NOT NULL,
    cseq         INTEGER NOT NULL CHECK (cseq >= 0),
    received     TEXT    NOT NULL,
    transport    TEXT    NOT NULL,
    local_addr   TEXT    NOT NULL,
    flow         TEXT,
    path         TEXT    NOT NULL DEFAULT '',
    user_agent   TEXT    NOT NULL DEFAULT '',
    instance_id  TEXT,
    reg_id       INTEGER CHECK (reg_id IS NULL OR reg_id >= 0),
    node_id      TEXT    NOT NULL,
    updated_at   INTEGER NOT NULL,
    PRIMARY KEY (aor, binding_key)
);

CREATE INDEX bindings_expires_at ON bindings (expires_at);
