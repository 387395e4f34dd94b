//! Offline administration of roles, teams, departments and grants: `custodian role …`,
//! `custodian team …`, `custodian department …`, `custodian grant …`. Every command goes through
//! the service layer as the system actor (the CLI context), so each change is validated and
//! audited exactly like the same change through the API.

use crate::{StoreArgs, open_service};
use anyhow::{Context, Result, anyhow};
use clap::Subcommand;
use custodian_service::{GrantRequest, RequestContext, Service, ServiceConfig, ServiceError};
use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;
use uuid::Uuid;

#[derive(Subcommand)]
pub enum RoleCommand {
    /// List every role (built-in and custom) as JSON.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one role as JSON.
    Show {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
    /// Create a custom role from a JSON definition (a file, or - for standard input).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        file: PathBuf,
    },
    /// Replace a custom role's definition.
    Update {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
        #[arg(long)]
        file: PathBuf,
    },
    /// Delete a custom role nobody holds.
    Delete {
        #[command(flatten)]
        store: StoreArgs,
        name: String,
    },
}

#[derive(Subcommand)]
pub enum TeamCommand {
    /// Create a team (optionally inside a department).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        department_id: Option<Uuid>,
    },
    /// List teams as JSON.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rename a team or move it to another department.
    Update {
        #[command(flatten)]
        store: StoreArgs,
        /// The team's id.
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        /// The department the team moves to.
        #[arg(long, conflicts_with = "no_department")]
        department_id: Option<Uuid>,
        /// Take the team out of any department.
        #[arg(long)]
        no_department: bool,
    },
}

#[derive(Subcommand)]
pub enum DepartmentCommand {
    /// Create a department (optionally below a parent).
    Create {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        name: String,
        #[arg(long)]
        parent_id: Option<Uuid>,
    },
    /// List departments as JSON.
    List {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Rename a department or move it below another.
    Update {
        #[command(flatten)]
        store: StoreArgs,
        /// The department's id.
        id: Uuid,
        #[arg(long)]
        name: Option<String>,
        /// The department it moves below.
        #[arg(long, conflicts_with = "top_level")]
        parent_id: Option<Uuid>,
        /// Make it a top-level department.
        #[arg(long)]
        top_level: bool,
    },
}

#[derive(Subcommand)]
pub enum GrantCommand {
    /// Give a user read or write access to one record or a team's records for N hours.
    Create {
        #[command(flatten)]
        store: StoreArgs,
        /// Username of the grantee.
        #[arg(long)]
        user: String,
        #[arg(long)]
        object: String,
        #[arg(long, conflicts_with = "team_id", required_unless_present = "team_id")]
        record_id: Option<Uuid>,
        #[arg(long)]
        team_id: Option<Uuid>,
        /// read or write
        #[arg(long, default_value = "read")]
        access: String,
        /// 1-720
        #[arg(long)]
        hours: u32,
        #[arg(long)]
        reason: String,
    },
    /// List grants as JSON (only those in force unless --all).
    List {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        all: bool,
    },
    /// Revoke a grant.
    Revoke {
        #[command(flatten)]
        store: StoreArgs,
        id: Uuid,
    },
}

/// A service error as one line: message and field details.
fn explain(e: ServiceError) -> anyhow::Error {
    let details: Vec<String> = e.details.iter().map(|d| format!("{}: {}", d.field, d.message)).collect();
    if details.is_empty() {
        anyhow!("{} ({})", e.message, e.code.as_str())
    } else {
        anyhow!("{} {}", e.message, details.join("; "))
    }
}

/// Prints a value as pretty JSON (a macro: the binary does not depend on serde itself).
macro_rules! print_json {
    ($value:expr) => {{
        println!("{}", serde_json::to_string_pretty(&$value)?);
        Ok(())
    }};
}

fn read_definition(file: &PathBuf) -> Result<serde_json::Value> {
    let mut text = String::new();
    if file.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).context("reading the role definition from stdin")?;
    } else {
        text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    }
    serde_json::from_str(&text).context("the role definition is not valid JSON")
}

async fn service(store: &StoreArgs) -> Result<Arc<Service>> {
    open_service(store, ServiceConfig::default()).await
}

pub async fn role(command: RoleCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        RoleCommand::List { store } => print_json!(service(&store).await?.list_roles(&ctx).await.map_err(explain)?),
        RoleCommand::Show { store, name } => {
            print_json!(service(&store).await?.get_role(&ctx, &name).await.map_err(explain)?)
        }
        RoleCommand::Create { store, file } => {
            let definition = read_definition(&file)?;
            print_json!(service(&store).await?.create_role(&ctx, &definition).await.map_err(explain)?)
        }
        RoleCommand::Update { store, name, file } => {
            let definition = read_definition(&file)?;
            print_json!(service(&store).await?.update_role(&ctx, &name, &definition).await.map_err(explain)?)
        }
        RoleCommand::Delete { store, name } => {
            service(&store).await?.delete_role(&ctx, &name).await.map_err(explain)?;
            println!("deleted role {name}");
            Ok(())
        }
    }
}

pub async fn team(command: TeamCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        TeamCommand::Create { store, name, department_id } => {
            print_json!(service(&store).await?.create_team(&ctx, &name, department_id).await.map_err(explain)?)
        }
        TeamCommand::List { store } => print_json!(service(&store).await?.list_teams(&ctx).await.map_err(explain)?),
        TeamCommand::Update { store, id, name, department_id, no_department } => {
            let department = if no_department { Some(None) } else { department_id.map(Some) };
            let service = service(&store).await?;
            print_json!(service.update_team(&ctx, id, name.as_deref(), department).await.map_err(explain)?)
        }
    }
}

pub async fn department(command: DepartmentCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        DepartmentCommand::Create { store, name, parent_id } => {
            print_json!(service(&store).await?.create_department(&ctx, &name, parent_id).await.map_err(explain)?)
        }
        DepartmentCommand::List { store } => {
            print_json!(service(&store).await?.list_departments(&ctx).await.map_err(explain)?)
        }
        DepartmentCommand::Update { store, id, name, parent_id, top_level } => {
            let parent = if top_level { Some(None) } else { parent_id.map(Some) };
            let service = service(&store).await?;
            print_json!(service.update_department(&ctx, id, name.as_deref(), parent).await.map_err(explain)?)
        }
    }
}

pub async fn grant(command: GrantCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        GrantCommand::Create { store, user, object, record_id, team_id, access, hours, reason } => {
            let service = service(&store).await?;
            let grantee = service
                .store()
                .get_user_by_username(&user)
                .await
                .map_err(|e| anyhow!("{e}"))?
                .ok_or_else(|| anyhow!("no user named {user}"))?;
            let req = GrantRequest { user_id: grantee.id, object, record_id, team_id, access, hours, reason };
            print_json!(service.create_grant(&ctx, &req).await.map_err(explain)?)
        }
        GrantCommand::List { store, all } => {
            print_json!(service(&store).await?.list_grants(&ctx, all).await.map_err(explain)?)
        }
        GrantCommand::Revoke { store, id } => {
            print_json!(service(&store).await?.revoke_grant(&ctx, id).await.map_err(explain)?)
        }
    }
}
