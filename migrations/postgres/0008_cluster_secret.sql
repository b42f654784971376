-- Ringfort schema v8 (PostgreSQL): the cluster's shared secret. One row, created by the
-- first node that needs it (INSERT ... ON CONFLICT DO NOTHING, then read), so every node
-- on the database signs and checks the INVITEs it forwards to another with the same key
-- and no config file has to carry it.
CREATE TABLE cluster_secret (
    id     INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    secret TEXT NOT NULL
);
