-- Issue 4: contacts are now also blocked on their company (a person entered twice at one
-- company often shares nothing else but a common name, whose block is too large to pair them).
-- Contacts stored before hold no company keys, so neither the duplicate check at entry nor the
-- scan would pair them by it; a backfill job recomputes every contact's keys (`run_jobs`). A new
-- database has no contacts here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
             || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
       'match_keys', 'contacts', '{}', 'pending', NULL,
       CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
FROM (SELECT hex(randomblob(16)) AS h)
WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = 'contacts' AND r.deleted_at IS NULL);
