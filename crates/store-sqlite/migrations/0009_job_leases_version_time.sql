-- Issue 5: periodic jobs (anomaly evaluation) run once per period by one server at a time,
-- decided by a conditional upsert of the job's lease row.
CREATE TABLE job_leases (
    job          TEXT PRIMARY KEY,
    holder       TEXT NOT NULL,
    lease_until  INTEGER NOT NULL,
    started_at   INTEGER NOT NULL
);
-- A record as of a time is one index seek, however many versions it has.
CREATE INDEX record_versions_time ON record_versions (record_id, changed_at, version);
