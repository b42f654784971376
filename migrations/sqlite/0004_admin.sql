-- Ringfort schema v4 (SQLite): admin accounts of the web panel and the admin API.
-- Passwords are stored only as argon2id PHC strings; session ids and API tokens only as
-- their SHA-256 (hex): the database never holds a usable credential.
CREATE TABLE admins (
    name          TEXT    NOT NULL PRIMARY KEY,
    role          TEXT    NOT NULL CHECK (role IN ('admin', 'user')),
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

-- Login sessions (cookie): the CSRF token state-changing requests must echo.
CREATE TABLE admin_sessions (
    id_hash    TEXT    NOT NULL PRIMARY KEY,
    admin      TEXT    NOT NULL REFERENCES admins (name) ON DELETE CASCADE,
    csrf_token TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);

-- API tokens for scripts (Authorization: Bearer), named per admin, revocable.
CREATE TABLE api_tokens (
    token_hash   TEXT    NOT NULL PRIMARY KEY,
    admin        TEXT    NOT NULL REFERENCES admins (name) ON DELETE CASCADE,
    name         TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    UNIQUE (admin, name)
);
