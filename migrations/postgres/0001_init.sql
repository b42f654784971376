-- Ringfort schema v1 (PostgreSQL). Times are unix seconds (BIGINT).
-- Keys use COLLATE "C" so ordering is bytewise, as in SQLite, whatever the database locale.
-- Extensions: SIP accounts. Only digest HA1 values are stored, never a cleartext password.
CREATE TABLE extensions (
    number       TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    display_name TEXT   NOT NULL DEFAULT '',
    realm        TEXT   NOT NULL,
    ha1_md5      TEXT   NOT NULL,
    ha1_sha256   TEXT   NOT NULL,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);

-- Location service: one row per registered contact of an AOR (extension).
-- `path` holds the RFC 3327 Path values, each terminated by '\n' ('\' and newline escaped).
CREATE TABLE bindings (
    aor          TEXT COLLATE "C" NOT NULL REFERENCES extensions (number) ON DELETE CASCADE,
    binding_key  TEXT COLLATE "C" NOT NULL,
    contact_uri  TEXT   NOT NULL,
    q            REAL,
    expires_at   BIGINT NOT NULL,
    call_id      TEXT   NOT NULL,
    cseq         BIGINT NOT NULL CHECK (cseq >= 0),
    received     TEXT   NOT NULL,
    transport    TEXT   NOT NULL,
    local_addr   TEXT   NOT NULL,
    flow         TEXT,
    path         TEXT   NOT NULL DEFAULT '',
    user_agent   TEXT   NOT NULL DEFAULT '',
    instance_id  TEXT,
    reg_id       BIGINT CHECK (reg_id IS NULL OR reg_id >= 0),
    node_id      TEXT   NOT NULL,
    updated_at   BIGINT NOT NULL,
    PRIMARY KEY (aor, binding_key)
);

CREATE INDEX bindings_expires_at ON bindings (expires_at);
