-- Issue 4: contacts are now also blocked on their company (a person entered twice at one
-- company often shares nothing else but a common name, whose block is too large to pair them).
-- Contacts stored before hold no company keys, so neither the duplicate check at entry nor the
-- scan would pair them by it; a backfill job recomputes every contact's keys (`run_jobs`). A new
-- database has no contacts here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT gen_random_uuid(), 'match_keys', 'contacts', '{}'::jsonb, 'pending', NULL,
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = 'contacts' AND r.deleted_at IS NULL);
