-- Sorting lists by last change (sort=-updated_at) without sorting the whole object; SQLite has
-- had this index since 0001.
CREATE INDEX IF NOT EXISTS records_object_updated ON records (object, updated_at);
-- Statistics for the planner right away (autovacuum would take a while on a bulk-loaded table).
ANALYZE records;
ANALYZE blind_indexes;
