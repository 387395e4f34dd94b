-- Issue 4: duplicate scans run as leased background jobs ('duplicate_scan'), so that another
-- server takes a scan over when the one running it dies. A scan left running by an earlier
-- version has no such job and would stay "running" forever: it is queued here, to be run again
-- by whichever server claims it.
INSERT INTO jobs (id, kind, object, params, status, requested_by, created_at)
SELECT gen_random_uuid(), 'duplicate_scan', object, jsonb_build_object('scan_job_id', id), 'pending',
       requested_by, (extract(epoch FROM clock_timestamp()) * 1000000)::bigint
FROM duplicate_scan_jobs
WHERE status = 'running';
