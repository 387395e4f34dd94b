-- Issue 4: records written before match keys existed (migration 0007) are no candidates for the
-- duplicate check until their keys are backfilled. On upgrade, a backfill job is queued for every
-- object with active records lacking keys; any server claims and runs it (`run_jobs`). A new
-- database has no records here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT gen_random_uuid(), 'match_keys', o.object, '{}'::jsonb, 'pending', NULL,
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
FROM (VALUES ('companies'), ('contacts'), ('leads'), ('deals')) AS o(object)
WHERE EXISTS (
    SELECT 1 FROM records r
    WHERE r.object = o.object AND r.deleted_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM match_keys m WHERE m.record_id = r.id)
);
