-- Ringfort schema v9 (SQLite): what each node counted once a minute, for the panel's
-- charts of the last day (concurrent calls, registrations). Rows older than 8 days are
-- pruned by the node that wrote them.
CREATE TABLE node_samples (
    node_id       TEXT NOT NULL,
    -- Unix seconds, by the node's clock, on a whole minute
    at            BIGINT NOT NULL,
    -- live bindings in the store (the cluster's, as every node shares them)
    registrations BIGINT NOT NULL,
    -- calls up on this node at that moment
    calls         BIGINT NOT NULL,
    PRIMARY KEY (node_id, at)
);
CREATE INDEX node_samples_at ON node_samples (at);
