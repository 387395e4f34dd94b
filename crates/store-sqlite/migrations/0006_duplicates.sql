-- Duplicate prevention, scan, review and merge (PRODUCT.md A3, A5). Append-only.

-- Keyed hashes of each record's blocking keys (matching engine), replaced with every write of
-- the record in the same transaction; the check at entry looks candidates up here.
CREATE TABLE match_keys (
    object      TEXT NOT NULL,
    key         BLOB NOT NULL,
    record_id   TEXT NOT NULL,
    PRIMARY KEY (object, key, record_id)
) WITHOUT ROWID;
CREATE INDEX match_keys_record ON match_keys (record_id);

-- Pairs decided "not a duplicate" (record_a < record_b): never proposed again.
CREATE TABLE duplicate_dismissals (
    object      TEXT NOT NULL,
    record_a    TEXT NOT NULL,
    record_b    TEXT NOT NULL,
    reason      TEXT NOT NULL,
    decided_by  TEXT,
    decided_at  INTEGER NOT NULL,
    PRIMARY KEY (object, record_a, record_b)
) WITHOUT ROWID;
CREATE INDEX duplicate_dismissals_b ON duplicate_dismissals (object, record_b);

CREATE TABLE duplicate_scan_jobs (
    id           TEXT PRIMARY KEY,
    object       TEXT NOT NULL,
    status       TEXT NOT NULL,
    requested_by TEXT,
    created_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    records      INTEGER NOT NULL DEFAULT 0,
    pairs        INTEGER NOT NULL DEFAULT 0,
    error        TEXT
);

CREATE TABLE duplicate_candidates (
    id          TEXT PRIMARY KEY,
    object      TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    cluster_id  TEXT NOT NULL,
    record_a    TEXT NOT NULL,
    record_b    TEXT NOT NULL,
    score       REAL NOT NULL,
    reasons     TEXT NOT NULL,
    status      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    decided_at  INTEGER,
    decided_by  TEXT
);
CREATE INDEX duplicate_candidates_queue ON duplicate_candidates (object, status, id);
CREATE INDEX duplicate_candidates_a ON duplicate_candidates (record_a);
CREATE INDEX duplicate_candidates_b ON duplicate_candidates (record_b);

-- Merges with what undo needs: the versions each record had before and after.
CREATE TABLE merges (
    id           TEXT PRIMARY KEY,
    object       TEXT NOT NULL,
    survivor_id  TEXT NOT NULL,
    loser_ids    TEXT NOT NULL,
    records      TEXT NOT NULL,
    request      TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    created_by   TEXT,
    undone_at    INTEGER,
    undone_by    TEXT
);
CREATE INDEX merges_survivor ON merges (survivor_id);
