-- Duplicate prevention, scan, review and merge (PRODUCT.md A3, A5). Append-only.

-- Keyed hashes of each record's blocking keys (matching engine), replaced with every write of
-- the record in the same transaction; the check at entry looks candidates up here.
CREATE TABLE match_keys (
    object      TEXT NOT NULL,
    key         BYTEA NOT NULL,
    record_id   UUID NOT NULL,
    PRIMARY KEY (object, key, record_id)
);
CREATE INDEX match_keys_record ON match_keys (record_id);

-- Pairs decided "not a duplicate" (record_a < record_b): never proposed again.
CREATE TABLE duplicate_dismissals (
    object      TEXT NOT NULL,
    record_a    UUID NOT NULL,
    record_b    UUID NOT NULL,
    reason      TEXT NOT NULL,
    decided_by  UUID,
    decided_at  BIGINT NOT NULL,
    PRIMARY KEY (object, record_a, record_b)
);
CREATE INDEX duplicate_dismissals_b ON duplicate_dismissals (object, record_b);

CREATE TABLE duplicate_scan_jobs (
    id           UUID PRIMARY KEY,
    object       TEXT NOT NULL,
    status       TEXT NOT NULL CHECK (status IN ('running', 'done', 'failed')),
    requested_by UUID,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT,
    records      BIGINT NOT NULL DEFAULT 0,
    pairs        BIGINT NOT NULL DEFAULT 0,
    error        TEXT
);

CREATE TABLE duplicate_candidates (
    id          UUID PRIMARY KEY,
    object      TEXT NOT NULL,
    job_id      UUID NOT NULL,
    cluster_id  UUID NOT NULL,
    record_a    UUID NOT NULL,
    record_b    UUID NOT NULL,
    score       DOUBLE PRECISION NOT NULL,
    reasons     JSONB NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('open', 'dismissed', 'merged')),
    created_at  BIGINT NOT NULL,
    decided_at  BIGINT,
    decided_by  UUID
);
CREATE INDEX duplicate_candidates_queue ON duplicate_candidates (object, status, id);
CREATE INDEX duplicate_candidates_a ON duplicate_candidates (record_a);
CREATE INDEX duplicate_candidates_b ON duplicate_candidates (record_b);

-- Merges with what undo needs: the versions each record had before and after.
CREATE TABLE merges (
    id           UUID PRIMARY KEY,
    object       TEXT NOT NULL,
    survivor_id  UUID NOT NULL,
    loser_ids    JSONB NOT NULL,
    records      JSONB NOT NULL,
    request      JSONB NOT NULL,
    created_at   BIGINT NOT NULL,
    created_by   UUID,
    undone_at    BIGINT,
    undone_by    UUID
);
CREATE INDEX merges_survivor ON merges (survivor_id);
