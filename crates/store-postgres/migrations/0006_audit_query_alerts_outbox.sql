-- Audit query (issue 5): the filters of GET /api/v1/audit/events are index range scans, newest
-- first. (record_id and (actor_id, at) are indexed since 0001.)
CREATE INDEX audit_events_actor_seq ON audit_events (actor_id, seq);
-- Byte-order collation: prefix filters are range scans (`action COLLATE "C" >= …`).
CREATE INDEX audit_events_action_seq ON audit_events ((action COLLATE "C"), seq);
CREATE INDEX audit_events_object_seq ON audit_events (object, seq);
CREATE INDEX audit_events_at ON audit_events (at);
-- Anomaly counters read one actor's events of a few actions in a window.
CREATE INDEX audit_events_actor_action_at ON audit_events (actor_id, action, at);

-- Anomaly alert rules: one per metric, the definition is the service's AlertRule as JSON.
CREATE TABLE alert_rules (
    metric      TEXT PRIMARY KEY,
    definition  JSONB NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- Raised alerts: at most one per metric, user and window (several servers may evaluate).
CREATE TABLE alerts (
    id            UUID PRIMARY KEY,
    metric        TEXT NOT NULL,
    user_id       UUID NOT NULL,
    window_start  BIGINT NOT NULL,
    raised_at     BIGINT NOT NULL,
    value         BIGINT NOT NULL,
    details       JSONB NOT NULL,
    acked_at      BIGINT,
    acked_by      UUID,
    UNIQUE (metric, user_id, window_start)
);
CREATE INDEX alerts_raised ON alerts (raised_at, id);

-- Change notifications (S13), written in the record's write transaction.
CREATE TABLE notifications (
    id          UUID PRIMARY KEY,
    user_id     UUID NOT NULL,
    object      TEXT NOT NULL,
    record_id   UUID NOT NULL,
    version     BIGINT NOT NULL,
    actor_id    UUID,
    changes     JSONB NOT NULL,
    created_at  BIGINT NOT NULL,
    acked_at    BIGINT
);
CREATE INDEX notifications_user ON notifications (user_id, created_at, id);

-- The transactional outbox: messages committed with the alert or change they announce, then
-- delivered by a worker that leases them (one delivery per message across servers).
CREATE TABLE outbox (
    id               UUID PRIMARY KEY,
    channel          TEXT NOT NULL,
    kind             TEXT NOT NULL,
    payload          JSONB NOT NULL,
    created_at       BIGINT NOT NULL,
    next_attempt_at  BIGINT NOT NULL,
    attempts         BIGINT NOT NULL DEFAULT 0,
    last_error       TEXT,
    delivered_at     BIGINT,
    lease_owner      TEXT,
    lease_until      BIGINT
);
CREATE INDEX outbox_due ON outbox (next_attempt_at) WHERE delivered_at IS NULL;
