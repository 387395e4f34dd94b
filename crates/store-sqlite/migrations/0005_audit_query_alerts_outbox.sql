-- Audit query (issue 5): the filters of GET /api/v1/audit/events are index range scans, newest
-- first. (record_id and (actor_id, at) are indexed since 0001.)
CREATE INDEX audit_events_actor_seq ON audit_events (actor_id, seq);
CREATE INDEX audit_events_action_seq ON audit_events (action, seq);
CREATE INDEX audit_events_object_seq ON audit_events (object, seq);
CREATE INDEX audit_events_at ON audit_events (at);
-- Anomaly counters read one actor's events of a few actions in a window.
CREATE INDEX audit_events_actor_action_at ON audit_events (actor_id, action, at);

-- Anomaly alert rules: one per metric, the definition is the service's AlertRule as JSON.
CREATE TABLE alert_rules (
    metric      TEXT PRIMARY KEY,
    definition  TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);

-- Raised alerts: at most one per metric, user and window (several servers may evaluate).
CREATE TABLE alerts (
    id            TEXT PRIMARY KEY,
    metric        TEXT NOT NULL,
    user_id       TEXT NOT NULL,
    window_start  INTEGER NOT NULL,
    raised_at     INTEGER NOT NULL,
    value         INTEGER NOT NULL,
    details       TEXT NOT NULL,
    acked_at      INTEGER,
    acked_by      TEXT,
    UNIQUE (metric, user_id, window_start)
);
CREATE INDEX alerts_raised ON alerts (raised_at, id);

-- Change notifications (S13), written in the record's write transaction.
CREATE TABLE notifications (
    id          TEXT PRIMARY KEY,
    user_id     TEXT NOT NULL,
    object      TEXT NOT NULL,
    record_id   TEXT NOT NULL,
    version     INTEGER NOT NULL,
    actor_id    TEXT,
    changes     TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    acked_at    INTEGER
);
CREATE INDEX notifications_user ON notifications (user_id, created_at, id);

-- The transactional outbox: messages committed with the alert or change they announce, then
-- delivered by a worker that leases them (one delivery per message across servers).
CREATE TABLE outbox (
    id               TEXT PRIMARY KEY,
    channel          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    next_attempt_at  INTEGER NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    delivered_at     INTEGER,
    lease_owner      TEXT,
    lease_until      INTEGER
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
