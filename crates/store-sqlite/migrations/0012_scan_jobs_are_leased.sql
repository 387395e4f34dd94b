-- Issue 4: duplicate scans run as leased background jobs ('duplicate_scan'), so that another
-- server takes a scan over when the one running it dies. A scan left running by an earlier
-- version has no such job and would stay "running" forever: it is queued here, to be run again
-- by whichever server claims it.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-a'
             || substr(h, 18, 3) || '-' || substr(h, 21, 12)),
       'duplicate_scan', object, json_object('scan_job_id', id), 'pending', requested_by,
       CAST((julianday('now') - 2440587.5) * 86400000000 AS INTEGER)
FROM (
    SELECT id, object, requested_by, hex(randomblob(16)) AS h
    FROM duplicate_scan_jobs
    WHERE status = 'running'
);
