-- Issue 3: servers cache roles, grants, the organisation (departments, teams, users' places and
-- roles), custom fields and field rules. Every change to one of them bumps this counter in the
-- changing transaction (by trigger, so no write path can forget it); each server reads the
-- counter at most every `CACHE_EPOCH_POLL` and drops its caches when it moved. A change made on
-- one server, or by the CLI on the same database file, then applies everywhere within that
-- interval instead of a cache lifetime.
CREATE TABLE cache_epoch (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    n  INTEGER NOT NULL
);
INSERT INTO cache_epoch (id, n) VALUES (1, 0);

CREATE TRIGGER roles_epoch_insert AFTER INSERT ON roles BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER roles_epoch_update AFTER UPDATE ON roles BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER roles_epoch_delete AFTER DELETE ON roles BEGIN UPDATE cache_epoch SET n = n + 1; END;

CREATE TRIGGER access_grants_epoch_insert AFTER INSERT ON access_grants BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER access_grants_epoch_update AFTER UPDATE ON access_grants BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER access_grants_epoch_delete AFTER DELETE ON access_grants BEGIN UPDATE cache_epoch SET n = n + 1; END;

CREATE TRIGGER departments_epoch_insert AFTER INSERT ON departments BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER departments_epoch_update AFTER UPDATE ON departments BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER departments_epoch_delete AFTER DELETE ON departments BEGIN UPDATE cache_epoch SET n = n + 1; END;

CREATE TRIGGER teams_epoch_insert AFTER INSERT ON teams BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER teams_epoch_update AFTER UPDATE ON teams BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER teams_epoch_delete AFTER DELETE ON teams BEGIN UPDATE cache_epoch SET n = n + 1; END;

-- Users: only what the caches hold (status, password and the like are read per request).
CREATE TRIGGER users_epoch_insert AFTER INSERT ON users BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER users_epoch_update AFTER UPDATE OF role, department_id, team_id ON users
BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER users_epoch_delete AFTER DELETE ON users BEGIN UPDATE cache_epoch SET n = n + 1; END;

CREATE TRIGGER custom_fields_epoch_insert AFTER INSERT ON custom_fields BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER custom_fields_epoch_update AFTER UPDATE ON custom_fields BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER custom_fields_epoch_delete AFTER DELETE ON custom_fields BEGIN UPDATE cache_epoch SET n = n + 1; END;

CREATE TRIGGER field_rules_epoch_insert AFTER INSERT ON field_rules BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER field_rules_epoch_update AFTER UPDATE ON field_rules BEGIN UPDATE cache_epoch SET n = n + 1; END;
CREATE TRIGGER field_rules_epoch_delete AFTER DELETE ON field_rules BEGIN UPDATE cache_epoch SET n = n + 1; END;
