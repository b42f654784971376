-- Ringfort schema v5 (PostgreSQL): per-extension do-not-disturb and call forwarding.
-- Forward targets are extension numbers (checked by ringfort::admin, not by a foreign key:
-- a target may be removed later, and the dialplan ignores targets that are no extension).
ALTER TABLE extensions
    ADD COLUMN dnd              BOOLEAN NOT NULL DEFAULT FALSE,
    ADD COLUMN forward_always   TEXT COLLATE "C",
    ADD COLUMN forward_busy     TEXT COLLATE "C",
    ADD COLUMN forward_noanswer TEXT COLLATE "C";
