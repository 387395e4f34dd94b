//! Conformance cases of custom roles, time-boxed grants and the shared login-failure counters
//! (issue 3). Re-exported from `cases` so that `conformance_tests!` runs them on both backends.

use crate::cases::DynStore;
use custodian_store::{
    AuditDraft, CustomFieldRow, DepartmentRow, GrantRow, RoleRow, StoreError, TeamRow, UserRow, now_micros,
};
use serde_json::json;
use std::sync::Arc;
use uuid::Uuid;

fn role(name: &str, label: &str) -> RoleRow {
    let now = now_micros();
    RoleRow {
        name: name.to_owned(),
        definition: json!({ "name": name, "label_en": label, "objects": {}, "sensitive_default": "hidden" }),
        created_at: now,
        updated_at: now,
    }
}

async fn actions(store: &DynStore) -> Vec<String> {
    store.list_audit(0, 100_000).await.expect("audit").into_iter().map(|e| e.action).collect()
}

pub async fn roles_round_trip_and_held_roles_are_not_deleted(store: DynStore) {
    assert!(store.list_roles().await.expect("list").is_empty());
    let auditor2 = role("regional_auditor", "Regional auditor");
    store.create_role(auditor2.clone(), AuditDraft::new("role.create")).await.expect("create");
    store.create_role(role("analyst", "Analyst"), AuditDraft::new("role.create")).await.expect("create");
    let err = store.create_role(role("analyst", "Again"), AuditDraft::new("role.create")).await;
    assert!(matches!(err, Err(StoreError::AlreadyExists(_))), "{err:?}");
    let roles = store.list_roles().await.expect("list");
    assert_eq!(roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["analyst", "regional_auditor"]);
    assert_eq!(roles[1], auditor2, "definition round-trips");

    let mut changed = role("analyst", "Senior analyst");
    changed.created_at = roles[0].created_at;
    changed.updated_at = roles[0].updated_at + 5;
    store.update_role(changed.clone(), AuditDraft::new("role.update")).await.expect("update");
    assert_eq!(store.list_roles().await.expect("list")[0], changed);
    let missing = store.update_role(role("nobody", "x"), AuditDraft::new("role.update")).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");

    // A role still held by a user is not deleted, and nothing is written.
    let holder = UserRow {
        id: Uuid::now_v7(),
        username: "analyst1".into(),
        display_name: "Analyst".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: "analyst".into(),
        department_id: None,
        team_id: None,
        status: "active".into(),
        created_at: now_micros(),
        email: None,
    };
    store.create_user(holder.clone(), AuditDraft::new("user.create")).await.expect("user");
    let before = store.audit_max_seq().await.expect("seq");
    let held = store.delete_role("analyst", AuditDraft::new("role.delete")).await;
    assert!(matches!(held, Err(StoreError::Conflict(_))), "{held:?}");
    assert_eq!(store.audit_max_seq().await.expect("seq"), before, "no event for a refused delete");
    assert_eq!(store.list_roles().await.expect("list").len(), 2);

    let mut moved = holder.clone();
    moved.role = "sales_rep".into();
    store.update_user(moved, false, AuditDraft::new("user.update")).await.expect("update user");
    store.delete_role("analyst", AuditDraft::new("role.delete")).await.expect("delete");
    let gone = store.delete_role("analyst", AuditDraft::new("role.delete")).await;
    assert!(matches!(gone, Err(StoreError::NotFound)), "{gone:?}");
    assert_eq!(store.list_roles().await.expect("list").len(), 1);
    let acts = actions(&store).await;
    assert_eq!(acts.iter().filter(|a| a.starts_with("role.")).count(), 4, "{acts:?}");

    // A deleted (or never created) custom role cannot be given to anyone; built-in roles can.
    let mut again = holder.clone();
    again.role = "analyst".into();
    let refused = store.update_user(again, false, AuditDraft::new("user.role_change")).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    let newcomer = UserRow { id: Uuid::now_v7(), username: "analyst2".into(), ..holder.clone() };
    let refused = store.create_user(newcomer.clone(), AuditDraft::new("user.create")).await;
    assert!(matches!(refused, Err(StoreError::Conflict(_))), "{refused:?}");
    assert_eq!(store.get_user(holder.id).await.expect("get").expect("user").role, "sales_rep");
    assert!(store.get_user(newcomer.id).await.expect("get").is_none());
}

/// Deleting a role while it is being given to someone: whichever commits first, no user ends up
/// holding a role that no longer exists.
pub async fn a_role_is_never_deleted_while_being_assigned(store: DynStore) {
    let user = UserRow {
        id: Uuid::now_v7(),
        username: "racer".into(),
        display_name: "Racer".into(),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        role: "sales_rep".into(),
        department_id: None,
        team_id: None,
        status: "active".into(),
        created_at: now_micros(),
        email: None,
    };
    store.create_user(user.clone(), AuditDraft::new("user.create")).await.expect("user");
    let (mut assigned, mut deleted) = (0, 0);
    for round in 0..20 {
        let name = format!("temp_role_{round}");
        store.create_role(role(&name, "Temporary"), AuditDraft::new("role.create")).await.expect("role");
        let mut given = user.clone();
        given.role = name.clone();
        let (a, b) = (store.clone(), store.clone());
        let assign = tokio::spawn(async move { a.update_user(given, true, AuditDraft::new("user.role_change")).await });
        let n = name.clone();
        let delete = tokio::spawn(async move { b.delete_role(&n, AuditDraft::new("role.delete")).await });
        let (assign, delete) = (assign.await.expect("task"), delete.await.expect("task"));
        let holds = store.get_user(user.id).await.expect("get").expect("user").role == name;
        let exists = store.list_roles().await.expect("roles").iter().any(|r| r.name == name);
        assert!(!holds || exists, "round {round}: the user holds deleted role {name} ({assign:?}, {delete:?})");
        assert_eq!(assign.is_ok(), holds, "round {round}: {assign:?}");
        assert_eq!(delete.is_ok(), !exists, "round {round}: {delete:?}");
        assigned += usize::from(holds);
        deleted += usize::from(!exists);
        // Back to a built-in role, so that the next round starts alike.
        store.update_user(user.clone(), true, AuditDraft::new("user.role_change")).await.expect("reset");
    }
    assert_eq!(assigned + deleted, 20, "exactly one of the two wins each round");
}

fn grant(user: Uuid, record: Option<Uuid>, team: Option<Uuid>, expires_at: i64) -> GrantRow {
    GrantRow {
        id: Uuid::now_v7(),
        user_id: user,
        object: "contacts".into(),
        record_id: record,
        team_id: team,
        access: "read".into(),
        reason: "covering for 张三 during leave".into(),
        granted_by: Some(Uuid::now_v7()),
        created_at: now_micros(),
        expires_at,
        revoked_at: None,
        revoked_by: None,
    }
}

pub async fn grants_expire_by_time_and_are_revoked_once(store: DynStore) {
    let now = now_micros();
    let hour = 3_600_000_000i64;
    let user = Uuid::now_v7();
    let live = grant(user, Some(Uuid::now_v7()), None, now + hour);
    let mut team = grant(user, None, Some(Uuid::now_v7()), now + 2 * hour);
    team.access = "write".into();
    let expired = grant(user, Some(Uuid::now_v7()), None, now - 1);
    for g in [&live, &team, &expired] {
        store.create_grant(g.clone(), AuditDraft::new("grant.create")).await.expect("create");
    }
    assert_eq!(store.get_grant(team.id).await.expect("get"), Some(team.clone()), "round-trips");
    assert_eq!(store.get_grant(Uuid::now_v7()).await.expect("get"), None);
    assert_eq!(store.list_grants(None).await.expect("all").len(), 3);
    let active: Vec<Uuid> = store.list_grants(Some(now)).await.expect("active").iter().map(|g| g.id).collect();
    assert_eq!(active.len(), 2);
    assert!(active.contains(&live.id) && active.contains(&team.id));
    // Expiry is a matter of the time asked about: no job marks grants expired.
    let later: Vec<Uuid> = store.list_grants(Some(now + hour + 1)).await.expect("later").iter().map(|g| g.id).collect();
    assert_eq!(later, vec![team.id]);

    // Revoking twice at once: exactly one wins and writes its event.
    let by = Some(Uuid::now_v7());
    let (a, b) = tokio::join!(
        store.revoke_grant(live.id, now + 10, by, AuditDraft::new("grant.revoke")),
        store.revoke_grant(live.id, now + 11, by, AuditDraft::new("grant.revoke")),
    );
    let wins = [a.expect("revoke"), b.expect("revoke")];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let revoked = store.get_grant(live.id).await.expect("get").expect("exists");
    assert!(revoked.revoked_at.is_some() && revoked.revoked_by == by);
    assert!(!revoked.active_at(now));
    assert_eq!(store.list_grants(Some(now)).await.expect("active").len(), 1);
    let missing = store.revoke_grant(Uuid::now_v7(), now, by, AuditDraft::new("grant.revoke")).await;
    assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
    let acts = actions(&store).await;
    assert_eq!(acts.iter().filter(|a| *a == "grant.revoke").count(), 1);
    assert_eq!(acts.iter().filter(|a| *a == "grant.create").count(), 3);
}

pub async fn login_counters_are_atomic_and_forget_old_failures(store: DynStore) {
    let account = "user:4f1c".to_owned();
    let address = "ip:9a0b".to_owned();
    let keys = vec![account.clone(), address.clone()];
    assert!(store.login_counters(&keys).await.expect("read").is_empty());
    let t0 = 1_800_000_000_000_000i64;
    // Fifty concurrent failures (two servers, or one flood) are all counted.
    let mut tasks = Vec::new();
    for i in 0..50i64 {
        let store = Arc::clone(&store);
        let keys = keys.clone();
        tasks.push(tokio::spawn(async move { store.record_login_failure(&keys, t0 + i, t0 - 1).await }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        let rows = t.await.expect("join").expect("record");
        assert_eq!(rows.len(), 2);
        seen.push(rows.iter().find(|r| r.key == account).expect("account").failures);
    }
    seen.sort_unstable();
    assert_eq!(seen, (1..=50).collect::<Vec<i64>>(), "every increment saw its own count");
    let mut rows = store.login_counters(&keys).await.expect("read");
    rows.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(rows.iter().map(|r| r.failures).collect::<Vec<_>>(), [50, 50]);
    assert!(rows.iter().all(|r| r.last_failure_at == t0 + 49), "{rows:?}");

    // Success clears the account only.
    store.clear_login_failures(&account).await.expect("clear");
    let rows = store.login_counters(&keys).await.expect("read");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].key, address);

    // A failure long after the last one starts the count again.
    let much_later = t0 + 7_200_000_000;
    let rows = store.record_login_failure(std::slice::from_ref(&address), much_later, much_later - 3_600_000_000).await;
    let rows = rows.expect("record");
    assert_eq!((rows[0].failures, rows[0].last_failure_at), (1, much_later));
    // Keys are data, not SQL.
    let odd = vec!["ip:'; DROP TABLE login_failures; --".to_owned()];
    store.record_login_failure(&odd, t0, t0 - 1).await.expect("odd key");
    assert_eq!(store.login_counters(&odd).await.expect("read")[0].failures, 1);
}

/// Every committed change to what servers cache (roles, grants, departments, teams, users'
/// roles and places, custom fields) moves the cache epoch; record writes do not, so that
/// ordinary traffic never makes servers drop their caches.
pub async fn the_cache_epoch_moves_with_shared_configuration_only(store: DynStore) {
    let epoch = || async { store.cache_epoch().await.expect("epoch") };
    let mut last = epoch().await;
    let mut moved = |what: &str, now: i64| {
        assert!(now > last, "{what} moved the epoch ({last} -> {now})");
        last = now;
    };
    store.create_role(role("analyst", "Analyst"), AuditDraft::new("role.create")).await.expect("role");
    moved("a new role", epoch().await);
    let dept =
        DepartmentRow { id: Uuid::now_v7(), name: "销售部".into(), parent_id: None, created_at: now_micros() };
    store.create_department(dept.clone(), AuditDraft::new("department.create")).await.expect("department");
    moved("a new department", epoch().await);
    let team = TeamRow { id: Uuid::now_v7(), name: "A".into(), department_id: Some(dept.id), created_at: now_micros() };
    store.create_team(team.clone(), AuditDraft::new("team.create")).await.expect("team");
    moved("a new team", epoch().await);
    let mut user = crate::cases::user("rep1");
    store.create_user(user.clone(), AuditDraft::new("user.create")).await.expect("user");
    moved("a new user", epoch().await);
    user.team_id = Some(team.id);
    store.update_user(user.clone(), false, AuditDraft::new("user.update")).await.expect("team change");
    moved("a user's new team", epoch().await);
    user.role = "analyst".into();
    store.update_user(user.clone(), false, AuditDraft::new("user.update")).await.expect("role change");
    moved("a user's new role", epoch().await);
    let g = grant(user.id, Some(Uuid::now_v7()), None, now_micros() + 3_600_000_000);
    store.create_grant(g.clone(), AuditDraft::new("grant.create")).await.expect("grant");
    moved("a new grant", epoch().await);
    store.revoke_grant(g.id, now_micros(), None, AuditDraft::new("grant.revoke")).await.expect("revoke");
    moved("a revoked grant", epoch().await);
    let field = CustomFieldRow {
        object: "contacts".into(),
        name: "x_level".into(),
        definition: json!({"name": "x_level", "type": "text"}),
        created_at: now_micros(),
    };
    store.add_custom_field(field, AuditDraft::new("schema.add_field")).await.expect("field");
    moved("a custom field", epoch().await);
    // A data key added by a rotation: every server must learn it.
    let key = custodian_store::WrappedKeyRow { label: "data:77".into(), wrapped: vec![1, 2, 3] };
    assert!(store.insert_wrapped_key(key, AuditDraft::new("key.rotate")).await.expect("key"));
    moved("a new data key", epoch().await);

    // Servers cache sessions too: ending one, or suspending its user, moves the epoch.
    let session = |hash: &str| crate::cases::session_for(user.id, hash);
    let before = epoch().await;
    store.create_session(session("s1"), AuditDraft::new("auth.login")).await.expect("session");
    store.create_session(session("s2"), AuditDraft::new("auth.login")).await.expect("session");
    store.touch_session("s1", now_micros() + 61_000_000).await.expect("touch");
    assert_eq!(epoch().await, before, "new sessions and touches leave the epoch alone");
    store.delete_session("s1", AuditDraft::new("auth.logout")).await.expect("logout");
    moved("a session ended", epoch().await);
    user.status = "suspended".into();
    store.update_user(user.clone(), true, AuditDraft::new("user.suspend")).await.expect("suspend");
    moved("a user suspended", epoch().await);
    assert_eq!(store.get_session("s2").await.expect("get"), None, "suspension ended the other session");

    // Records come and go without moving it; a refused change does not move it either.
    let record = crate::cases::create(&store, json!({"name": "张三"})).await;
    crate::cases::update(&store, &record, json!({"name": "张三丰"})).await;
    let refused = store.create_role(role("analyst", "Again"), AuditDraft::new("role.create")).await;
    assert!(refused.is_err());
    assert_eq!(epoch().await, last, "record writes and refused changes leave the epoch alone");
}

/// Moving departments checks for cycles inside the transaction: of two concurrent moves that
/// would together make a cycle, exactly one succeeds.
pub async fn department_moves_never_make_a_cycle(store: DynStore) {
    let dept =
        |name: &str| DepartmentRow { id: Uuid::now_v7(), name: name.into(), parent_id: None, created_at: now_micros() };
    for round in 0..10 {
        let (a, b) = (dept(&format!("A{round}")), dept(&format!("B{round}")));
        for d in [&a, &b] {
            store.create_department(d.clone(), AuditDraft::new("department.create")).await.expect("create");
        }
        let a_under_b = DepartmentRow { parent_id: Some(b.id), ..a.clone() };
        let b_under_a = DepartmentRow { parent_id: Some(a.id), ..b.clone() };
        let (x, y) = tokio::join!(
            store.update_department(a_under_b, AuditDraft::new("department.update")),
            store.update_department(b_under_a, AuditDraft::new("department.update")),
        );
        assert_eq!(u8::from(x.is_ok()) + u8::from(y.is_ok()), 1, "round {round}: {x:?} {y:?}");
        assert!(matches!(x.err().or(y.err()), Some(StoreError::Conflict(_))));
    }
    // Below itself, below a missing department, a missing department or team.
    let a = dept("self");
    store.create_department(a.clone(), AuditDraft::new("department.create")).await.expect("create");
    let own = store.update_department(DepartmentRow { parent_id: Some(a.id), ..a.clone() }, AuditDraft::new("x")).await;
    assert!(matches!(own, Err(StoreError::Conflict(_))), "{own:?}");
    let orphan = DepartmentRow { parent_id: Some(Uuid::now_v7()), ..a.clone() };
    assert!(matches!(store.update_department(orphan, AuditDraft::new("x")).await, Err(StoreError::Conflict(_))));
    let ghost = dept("ghost");
    assert!(matches!(store.update_department(ghost, AuditDraft::new("x")).await, Err(StoreError::NotFound)));
    let team = TeamRow { id: Uuid::now_v7(), name: "T".into(), department_id: None, created_at: now_micros() };
    assert!(matches!(store.update_team(team.clone(), AuditDraft::new("x")).await, Err(StoreError::NotFound)));
    store.create_team(team.clone(), AuditDraft::new("team.create")).await.expect("team");
    let homeless = TeamRow { department_id: Some(Uuid::now_v7()), ..team.clone() };
    assert!(matches!(store.update_team(homeless, AuditDraft::new("x")).await, Err(StoreError::Conflict(_))));
    let moved = TeamRow { name: "T2".into(), department_id: Some(a.id), ..team.clone() };
    store.update_team(moved.clone(), AuditDraft::new("team.update")).await.expect("move");
    assert_eq!(store.list_teams().await.expect("teams"), vec![moved]);
    let renamed = DepartmentRow { name: "renamed".into(), ..a.clone() };
    store.update_department(renamed.clone(), AuditDraft::new("department.update")).await.expect("rename");
    assert!(store.list_departments().await.expect("list").contains(&renamed));
    let events = store.list_audit(0, 100_000).await.expect("audit");
    assert_eq!(events.iter().filter(|e| e.action == "department.update").count(), 11, "one per change that happened");
    assert_eq!(events.iter().filter(|e| e.action == "x").count(), 0, "refused changes write nothing");
}
