-- Issue 4: the blocking keys changed (a phone's digits around its middle, a Han name's surname
-- with each other character, an address's numbers). Records stored before hold the old keys, so
-- the duplicate check would not find them by the new ones; a backfill job per object with
-- active records recomputes every record's keys (`run_jobs`). A new database has no records
-- here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT gen_random_uuid(), 'match_keys', o.object, '{}'::jsonb, 'pending', NULL,
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
FROM (VALUES ('companies'), ('contacts'), ('leads'), ('deals')) AS o(object)
WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = o.object AND r.deleted_at IS NULL);
