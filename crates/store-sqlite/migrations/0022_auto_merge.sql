-- Issue 4: a duplicate scan may merge the pairs it is surest of (auto-merge, off by default).
-- The scan job keeps what it was asked for and what it did; a merged candidate pair keeps the
-- merge that took it, so that a steward can find that merge and undo it. Append-only.
ALTER TABLE duplicate_scan_jobs ADD COLUMN auto_merge TEXT;
ALTER TABLE duplicate_candidates ADD COLUMN merge_id TEXT;
