-- The check at entry reads the current version of its candidates (Store::active_versions)
-- before deciding which it must read whole. A record's row is a kilobyte or two, about two to
-- a page, so reading a version from the table touched a page per candidate. The (object, id)
-- index now also holds the version and the deletion time, and answers that read alone; it
-- still serves every look-up and order by (object, id).
CREATE INDEX records_object_id_version ON records (object, id, version, deleted_at);
DROP INDEX records_object_id;
