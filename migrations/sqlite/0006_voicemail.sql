-- Ringfort schema v6 (SQLite): voicemail.
-- A mailbox is named by its extension number; no foreign key to `extensions`, so removing
-- an extension does not silently delete messages whose files stay on disk (an admin
-- cleans a mailbox up on purpose). A mailbox row exists once it has a PIN or a greeting;
-- messages need none.
CREATE TABLE voicemail_boxes (
    mailbox              TEXT NOT NULL PRIMARY KEY,
    -- argon2id PHC string; NULL: no PIN (only the owner's own phone gets in, see DESIGN.md)
    pin_hash             TEXT,
    -- recorded greetings, paths relative to the data directory; NULL: the default prompt
    greeting_unavailable TEXT,
    greeting_busy        TEXT,
    updated_at           BIGINT NOT NULL
);
CREATE TABLE voicemail_messages (
    id          TEXT NOT NULL PRIMARY KEY,
    mailbox     TEXT NOT NULL,
    caller      TEXT NOT NULL,
    caller_name TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    duration_ms BIGINT NOT NULL,
    folder      TEXT NOT NULL CHECK (folder IN ('new', 'old')),
    -- the WAV file, relative to the data directory
    path        TEXT NOT NULL UNIQUE
);
CREATE INDEX voicemail_messages_by_mailbox ON voicemail_messages (mailbox, folder, received_at);
