-- Field rules as data and background jobs (PRODUCT.md A1). Append-only.

-- The rules of a field set through the rules API (fields without a row keep their defaults).
CREATE TABLE field_rules (
    object      TEXT NOT NULL,
    field       TEXT NOT NULL,
    rules       JSONB NOT NULL,
    revision    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    updated_by  UUID,
    PRIMARY KEY (object, field)
);

-- Jobs any server may claim: a lease (claimed_by, lease_until) in the database, a cursor to
-- resume from.
CREATE TABLE jobs (
    id           UUID PRIMARY KEY,
    kind         TEXT NOT NULL,
    object       TEXT NOT NULL,
    params       JSONB NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    requested_by UUID,
    created_at   BIGINT NOT NULL,
    claimed_by   TEXT,
    lease_until  BIGINT,
    cursor       UUID,
    scanned      BIGINT NOT NULL DEFAULT 0,
    found        BIGINT NOT NULL DEFAULT 0,
    finished_at  BIGINT,
    error        TEXT
);
CREATE INDEX jobs_open ON jobs (status, created_at) WHERE status IN ('pending', 'running');

-- Violations found by a rule check (record, field, code); nothing else is changed.
CREATE TABLE rule_violations (
    job_id      UUID NOT NULL,
    record_id   UUID NOT NULL,
    field       TEXT NOT NULL,
    code        TEXT NOT NULL,
    PRIMARY KEY (job_id, record_id, field, code)
);
