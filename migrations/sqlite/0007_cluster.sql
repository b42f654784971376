-- Ringfort schema v7 (SQLite): cluster membership and floating-IP leases.
-- Times are milliseconds since the Unix epoch by the DATABASE's clock (heartbeats and
-- lease expiries are written with the database's own now, so node clocks never compare
-- against each other); started_at is the node's own wall clock, for display only.
CREATE TABLE cluster_nodes (
    node_id       TEXT NOT NULL PRIMARY KEY,
    -- where other nodes reach this one for SIP ("IP:port") and its media address ("IP");
    -- "" when not configured
    sip_address   TEXT NOT NULL,
    media_address TEXT NOT NULL,
    started_at    BIGINT NOT NULL,
    heartbeat_at  BIGINT NOT NULL,
    -- the ringfort version the node runs
    version       TEXT NOT NULL
);
-- One row per floating IP. term is the fencing token: +1 on every acquire; a renewal or
-- release must name the holder AND its term. expires_at = 0 after a graceful release.
CREATE TABLE vip_leases (
    vip        TEXT NOT NULL PRIMARY KEY,
    holder     TEXT NOT NULL,
    term       BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
