-- Issue 4: contacts are now also matched and blocked on their WeChat ID (a personal account
-- name, strong evidence of one person). Contacts stored before hold no WeChat keys, so the
-- duplicate check at entry would not find them by it; a backfill job recomputes every contact's
-- keys (`run_jobs`). A new database has no contacts here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT gen_random_uuid(), 'match_keys', 'contacts', '{}'::jsonb, 'pending', NULL,
       (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = 'contacts' AND r.deleted_at IS NULL);
