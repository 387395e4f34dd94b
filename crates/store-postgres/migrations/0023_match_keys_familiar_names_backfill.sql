-- Issue 4: a person's name with an English familiar form of the given name (Beth Johnson, Bill
-- Clark) is now also keyed by its formal reading (Elizabeth Johnson, William Clark), so that the
-- check at entry and the scan put the two side by side. Contacts and leads stored before hold
-- no such keys; a backfill job per object with active records recomputes every record's keys
-- (`run_jobs`). A new database has no records here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT gen_random_uuid(), 'match_keys', o.object, '{}'::jsonb, 'pending', NULL,
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
FROM (VALUES ('contacts'), ('leads')) AS o(object)
WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = o.object AND r.deleted_at IS NULL);
