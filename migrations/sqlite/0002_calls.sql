-- Ringfort schema v2 (SQLite): calls.
-- Calls in progress: inserted when a call starts, updated when it is answered, deleted
-- when it ends (in the same transaction that writes its CDR). Rows a crashed node left
-- behind are turned into CDRs when that node starts again.
CREATE TABLE active_calls (
    id             TEXT    NOT NULL PRIMARY KEY,
    caller         TEXT    NOT NULL,
    callee         TEXT    NOT NULL,
    state          TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    answered_at    INTEGER,
    caller_call_id TEXT    NOT NULL,
    callee_call_id TEXT    NOT NULL,
    node_id        TEXT    NOT NULL
);
CREATE INDEX active_calls_node ON active_calls (node_id);

-- Call detail records: one row per ended call, written once. `duration` is the billable
-- seconds from answer to end (0 when never answered).
CREATE TABLE cdrs (
    id             TEXT    NOT NULL PRIMARY KEY,
    caller         TEXT    NOT NULL,
    callee         TEXT    NOT NULL,
    started_at     INTEGER NOT NULL,
    answered_at    INTEGER,
    ended_at       INTEGER NOT NULL,
    disposition    TEXT    NOT NULL,
    duration       INTEGER NOT NULL CHECK (duration >= 0),
    hangup_leg     TEXT    NOT NULL,
    caller_call_id TEXT    NOT NULL,
    callee_call_id TEXT    NOT NULL,
    node_id        TEXT    NOT NULL
);
CREATE INDEX cdrs_started_at ON cdrs (started_at);
