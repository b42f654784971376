-- Ringfort schema v12: the calls a node runs, with each heartbeat (every call task: the
-- calls it took and the legs other nodes forwarded to it), so `ringfort cluster status`
-- shows when a node a VIP was handed away from has drained.
ALTER TABLE cluster_nodes ADD COLUMN calls_active INTEGER NOT NULL DEFAULT 0;
