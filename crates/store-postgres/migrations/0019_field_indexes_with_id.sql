-- Field indexes become (value, id) per object (see custodian_store::field_index_name): an
-- equality filter then reads its matches in id order and stops at the page, instead of
-- sorting every match. Each old index (fx_<object>_<field>, on the value alone; made at run
-- time, for custom fields too, so found by name) is rebuilt here under its new name with the
-- same expression and predicate plus the id, then dropped: servers running as an application
-- role cannot create indexes themselves, and must not be left with none.
DO $$
DECLARE
    old record;
BEGIN
    FOR old IN
        SELECT c.relname AS name,
               pg_get_indexdef(i.indexrelid, 1, false) AS expr,
               pg_get_expr(i.indpred, i.indrelid, false) AS pred
        FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_class t ON t.oid = i.indrelid
        JOIN pg_namespace n ON n.oid = t.relnamespace
        WHERE n.nspname = current_schema() AND t.relname = 'records' AND c.relname LIKE 'fx\_%'
          AND i.indnatts = 1 AND i.indpred IS NOT NULL
    LOOP
        EXECUTE format('CREATE INDEX IF NOT EXISTS %I ON records ((%s), id) WHERE %s',
                       'fxid_' || substr(old.name, 4), old.expr, old.pred);
        EXECUTE format('DROP INDEX IF EXISTS %I', old.name);
    END LOOP;
END
$$;
