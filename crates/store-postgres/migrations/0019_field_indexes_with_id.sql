-- Field indexes become (value, id) per object (see custodian_store::field_index_name): an
-- equality filter then reads its matches in id order and stops at the page, instead of
-- sorting every match. The service creates the new ones (fxid_…) when it starts; the old
-- ones (fx_…, on the value alone) are dropped here. They are made at run time for custom
-- fields too, so they are found by name.
DO $$
DECLARE
    old record;
BEGIN
    FOR old IN
        SELECT indexname FROM pg_indexes
        WHERE schemaname = current_schema() AND tablename = 'records' AND indexname LIKE 'fx\_%'
    LOOP
        EXECUTE format('DROP INDEX IF EXISTS %I', old.indexname);
    END LOOP;
END
$$;
