//! Departments (a tree), teams, users listing, and runtime schema changes (custom fields).

use crate::error::{ServiceError, ServiceResult};
use crate::{RequestContext, Service};
use custodian_core::schema::{FieldDef, ObjectDef, check_custom_field};
use custodian_core::{ErrorCode, FieldError};
use custodian_store::{CustomFieldRow, DepartmentRow, StoreError, TeamRow, UserRow, now_micros};
use serde::Serialize;
use serde_json::json;
use uuid::Uuid;

/// A user as shown to admins (never the password hash).
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: Uuid,
    pub username: String,
    pub display_name: String,
    pub role: String,
    pub department_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub status: String,
    pub created_at: String,
    /// Where the user's change notifications are mailed.
    pub email: Option<String>,
}

impl From<&UserRow> for UserView {
    fn from(u: &UserRow) -> Self {
        UserView {
            id: u.id,
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            role: u.role.clone(),
            department_id: u.department_id,
            team_id: u.team_id,
            status: u.status.clone(),
            created_at: crate::micros_to_rfc3339(u.created_at),
            email: u.email.clone(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DepartmentView {
    pub id: Uuid,
    pub name: String,
    pub parent_id: Option<Uuid>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TeamView {
    pub id: Uuid,
    pub name: String,
    pub department_id: Option<Uuid>,
}

fn name_error(name: &str) -> Option<FieldError> {
    let n = name.trim().chars().count();
    (n == 0 || n > 100 || name.chars().any(char::is_control))
        .then(|| FieldError::new("name", "invalid_name", "Names need 1-100 characters.", "名称须为 1-100 个字符。"))
}

impl Service {
    pub async fn list_users(&self, ctx: &RequestContext) -> ServiceResult<Vec<UserView>> {
        self.admin_or_refuse(ctx, "user.list").await?;
        Ok(self.store.list_users().await?.iter().map(UserView::from).collect())
    }

    pub async fn create_department(
        &self,
        ctx: &RequestContext,
        name: &str,
        parent_id: Option<Uuid>,
    ) -> ServiceResult<DepartmentView> {
        self.admin_or_refuse(ctx, "department.create").await?;
        if let Some(e) = name_error(name) {
            return Err(ServiceError::validation(vec![e]));
        }
        if let Some(parent) = parent_id
            && !self.store.list_departments().await?.iter().any(|d| d.id == parent)
        {
            return Err(ServiceError::validation(vec![FieldError::new(
                "parent_id",
                "invalid_reference",
                "No such department.",
                "上级部门不存在。",
            )]));
        }
        let row =
            DepartmentRow { id: Uuid::now_v7(), name: name.trim().to_owned(), parent_id, created_at: now_micros() };
        let mut audit = self.audit_draft(ctx, "department.create");
        audit.details = json!({ "department_id": row.id, "name": row.name, "parent_id": row.parent_id });
        self.store.create_department(row.clone(), audit).await?;
        self.invalidate_org();
        Ok(DepartmentView { id: row.id, name: row.name, parent_id: row.parent_id })
    }

    pub async fn list_departments(&self, _ctx: &RequestContext) -> ServiceResult<Vec<DepartmentView>> {
        Ok(self
            .store
            .list_departments()
            .await?
            .into_iter()
            .map(|d| DepartmentView { id: d.id, name: d.name, parent_id: d.parent_id })
            .collect())
    }

    /// Ids of a department and every department below it.
    pub async fn department_subtree(&self, root: Uuid) -> ServiceResult<Vec<Uuid>> {
        let all = self.store.list_departments().await?;
        let mut out = vec![root];
        let mut i = 0;
        while i < out.len() {
            let parent = out[i];
            for d in all.iter().filter(|d| d.parent_id == Some(parent)) {
                if !out.contains(&d.id) {
                    out.push(d.id);
                }
            }
            i += 1;
        }
        Ok(out)
    }

    pub async fn create_team(
        &self,
        ctx: &RequestContext,
        name: &str,
        department_id: Option<Uuid>,
    ) -> ServiceResult<TeamView> {
        self.admin_or_refuse(ctx, "team.create").await?;
        if let Some(e) = name_error(name) {
            return Err(ServiceError::validation(vec![e]));
        }
        if let Some(dep) = department_id
            && !self.store.list_departments().await?.iter().any(|d| d.id == dep)
        {
            return Err(ServiceError::validation(vec![FieldError::new(
                "department_id",
                "invalid_reference",
                "No such department.",
                "部门不存在。",
            )]));
        }
        let row = TeamRow { id: Uuid::now_v7(), name: name.trim().to_owned(), department_id, created_at: now_micros() };
        let mut audit = self.audit_draft(ctx, "team.create");
        audit.details = json!({ "team_id": row.id, "name": row.name, "department_id": row.department_id });
        self.store.create_team(row.clone(), audit).await?;
        self.invalidate_org();
        Ok(TeamView { id: row.id, name: row.name, department_id: row.department_id })
    }

    pub async fn list_teams(&self, _ctx: &RequestContext) -> ServiceResult<Vec<TeamView>> {
        Ok(self
            .store
            .list_teams()
            .await?
            .into_iter()
            .map(|t| TeamView { id: t.id, name: t.name, department_id: t.department_id })
            .collect())
    }

    /// Renames a department or moves it under another (`parent_id: Some(None)` makes it a
    /// top-level department). Admins only; audited with before and after. A move below itself
    /// or below one of its own sub-departments is refused (422 on `parent_id`). Scopes that
    /// follow the department tree change with it, on every server.
    pub async fn update_department(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        name: Option<&str>,
        parent_id: Option<Option<Uuid>>,
    ) -> ServiceResult<DepartmentView> {
        self.admin_or_refuse(ctx, "department.update").await?;
        let before = self.store.list_departments().await?.into_iter().find(|d| d.id == id);
        let Some(before) = before else { return Err(ServiceError::not_found()) };
        if let Some(e) = name.and_then(name_error) {
            return Err(ServiceError::validation(vec![e]));
        }
        let row = DepartmentRow {
            name: name.map_or_else(|| before.name.clone(), |n| n.trim().to_owned()),
            parent_id: parent_id.unwrap_or(before.parent_id),
            ..before.clone()
        };
        let mut audit = self.audit_draft(ctx, "department.update");
        audit.details = json!({
            "department_id": id,
            "before": { "name": before.name, "parent_id": before.parent_id },
            "after": { "name": row.name, "parent_id": row.parent_id },
        });
        match self.store.update_department(row.clone(), audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "parent_id",
                    "invalid_reference",
                    "No such department, or the department itself or one below it.",
                    "上级部门不存在，或为该部门本身或其下级部门。",
                )]));
            }
            Err(e) => return Err(e.into()),
        }
        self.invalidate_org();
        Ok(DepartmentView { id: row.id, name: row.name, parent_id: row.parent_id })
    }

    /// Renames a team or moves it to another department (`department_id: Some(None)`: none).
    /// Admins only; audited with before and after. Records keep the team they were written
    /// for; members' and managers' department scopes follow the team's new department.
    pub async fn update_team(
        &self,
        ctx: &RequestContext,
        id: Uuid,
        name: Option<&str>,
        department_id: Option<Option<Uuid>>,
    ) -> ServiceResult<TeamView> {
        self.admin_or_refuse(ctx, "team.update").await?;
        let before = self.store.list_teams().await?.into_iter().find(|t| t.id == id);
        let Some(before) = before else { return Err(ServiceError::not_found()) };
        if let Some(e) = name.and_then(name_error) {
            return Err(ServiceError::validation(vec![e]));
        }
        let row = TeamRow {
            name: name.map_or_else(|| before.name.clone(), |n| n.trim().to_owned()),
            department_id: department_id.unwrap_or(before.department_id),
            ..before.clone()
        };
        let mut audit = self.audit_draft(ctx, "team.update");
        audit.details = json!({
            "team_id": id,
            "before": { "name": before.name, "department_id": before.department_id },
            "after": { "name": row.name, "department_id": row.department_id },
        });
        match self.store.update_team(row.clone(), audit).await {
            Ok(()) => {}
            Err(StoreError::Conflict(_)) => {
                return Err(ServiceError::validation(vec![FieldError::new(
                    "department_id",
                    "invalid_reference",
                    "No such department.",
                    "部门不存在。",
                )]));
            }
            Err(e) => return Err(e.into()),
        }
        self.invalidate_org();
        Ok(TeamView { id: row.id, name: row.name, department_id: row.department_id })
    }

    /// The schema of one object (standard and custom fields).
    pub fn object_schema(&self, object: &str) -> ServiceResult<ObjectDef> {
        self.object_def(object)
    }

    /// Adds a custom field at runtime. It is validated, stored, listed and filterable like a
    /// standard field from the next request on, on every server (they refresh the schema).
    pub async fn add_custom_field(
        &self,
        ctx: &RequestContext,
        object: &str,
        mut field: FieldDef,
    ) -> ServiceResult<ObjectDef> {
        self.admin_or_refuse(ctx, "schema.add_field").await?;
        self.refresh_schema().await?;
        let def = self.object_def(object)?;
        field.custom = true;
        if let Some(target) = &field.reference
            && self.schema().object(target).is_none()
        {
            return Err(ServiceError::validation(vec![FieldError::new(
                "reference",
                "unknown_object",
                "Unknown target object.",
                "目标对象不存在。",
            )]));
        }
        let errors = check_custom_field(&def, &field);
        if !errors.is_empty() {
            return Err(ServiceError::validation(errors));
        }
        let definition = serde_json::to_value(&field).map_err(|_| ServiceError::new(ErrorCode::Internal))?;
        let mut audit = self.audit_draft(ctx, "schema.add_field");
        audit.object = Some(def.name.clone());
        audit.details = json!({ "field": definition });
        let row =
            CustomFieldRow { object: def.name.clone(), name: field.name.clone(), definition, created_at: now_micros() };
        self.store.add_custom_field(row, audit).await.map_err(|e| match e {
            StoreError::AlreadyExists(_) => ServiceError::validation(vec![FieldError::new(
                "name",
                "field_exists",
                "A field with this name already exists.",
                "同名字段已存在。",
            )]),
            other => other.into(),
        })?;
        self.refresh_schema().await?;
        self.ensure_field_indexes().await?;
        self.object_def(object)
    }
}
