-- Issue 4: the blocking keys changed (a phone's digits around its middle, a Han name's surname
-- with each other character, an address's numbers). Records stored before hold the old keys, so
-- the duplicate check would not find them by the new ones; a backfill job per object with
-- active records recomputes every record's keys (`run_jobs`). A new database has no records
-- here, so nothing is queued.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
             || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
       'match_keys', object, '{}', 'pending', NULL,
       CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
FROM (
    SELECT o.object, hex(randomblob(16)) AS h
    FROM (SELECT 'companies' AS object UNION ALL SELECT 'contacts' UNION ALL SELECT 'leads' UNION ALL SELECT 'deals') AS o
    WHERE EXISTS (SELECT 1 FROM records r WHERE r.object = o.object AND r.deleted_at IS NULL)
);
