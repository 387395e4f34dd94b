-- Issue 4: a person's name with an English familiar form of the given name (Beth Johnson, Bill
-- Clark) is now also keyed by its formal reading (Elizabeth Johnson, William Clark), so that the
-- check at entry and the scan put the two side by side. Contacts and leads stored before hold
-- no such keys; a backfill job per object with active records recomputes every record's keys
-- (`run_jobs`). A new database has no records here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
             || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
       'match_keys', object, '{}', 'pending', NULL,
       CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
FROM (
    SELECT o.object, hex(randomblob(16)) AS h
    FROM (SELECT 'contacts' AS object UNION ALL SELECT 'leads') AS o
    WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = o.object AND r.deleted_at IS NULL)
);
