-- Ringfort schema v5 (SQLite): per-extension do-not-disturb and call forwarding.
-- Forward targets are extension numbers (checked by ringfort::admin, not by a foreign key:
-- a target may be removed later, and the dialplan ignores targets that are no extension).
ALTER TABLE extensions ADD COLUMN dnd INTEGER NOT NULL DEFAULT 0 CHECK (dnd IN (0, 1));
ALTER TABLE extensions ADD COLUMN forward_always TEXT;
ALTER TABLE extensions ADD COLUMN forward_busy TEXT;
ALTER TABLE extensions ADD COLUMN forward_noanswer TEXT;
