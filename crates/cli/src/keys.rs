//! `custodian keys status|rotate` (PRODUCT.md S5), offline on the store as the operator.

use crate::{StoreArgs, open_service};
use anyhow::{Result, anyhow};
use clap::Subcommand;
use custodian_service::{RequestContext, ServiceConfig};

#[derive(Subcommand)]
pub enum KeysCommand {
    /// The data key versions and the one sealing new values.
    Status {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Add data key version N+1 and seal every stored sensitive value of active records again
    /// under it (resumable jobs, run here to the end; running servers take the new key within
    /// a second). Record versions keep their ciphertext; every key version stays to open them.
    Rotate {
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Seal stored sensitive values under the current data key again, without a new key (after
    /// a rotation whose jobs never started).
    Reseal {
        #[command(flatten)]
        store: StoreArgs,
    },
}

pub async fn run(command: KeysCommand) -> Result<()> {
    let ctx = RequestContext::cli();
    match command {
        KeysCommand::Status { store } => {
            let service = open_service(&store, ServiceConfig::default()).await?;
            let status = service.key_status(&ctx).await.map_err(|e| anyhow!("{e}"))?;
            println!("{}", serde_json::to_string_pretty(&status)?);
        }
        KeysCommand::Rotate { ref store } | KeysCommand::Reseal { ref store } => {
            // The jobs run here, in the foreground, rather than on a background task.
            let config = ServiceConfig { start_jobs_at_once: false, ..ServiceConfig::default() };
            let service = open_service(store, config).await?;
            let rotation = if matches!(command, KeysCommand::Rotate { .. }) {
                let r = service.rotate_data_key(&ctx).await.map_err(|e| anyhow!("{e}"))?;
                eprintln!("data key version {} added; sealing stored values again", r.version);
                r
            } else {
                service.reseal_stored_values(&ctx).await.map_err(|e| anyhow!("{e}"))?
            };
            let claimant = format!("cli-{}", uuid::Uuid::now_v7());
            service.run_jobs(&claimant).await.map_err(|e| {
                anyhow!("{e}; the re-encryption jobs resume from where they stopped when a server claims them")
            })?;
            let mut jobs = Vec::new();
            for job in &rotation.jobs {
                jobs.push(service.reencrypt_job(&ctx, job.id).await.map_err(|e| anyhow!("{e}"))?);
            }
            println!(
                "{}",
                serde_json::to_string_pretty(&serde_json::json!({
                    "previous_version": rotation.previous_version,
                    "version": rotation.version,
                    "jobs": jobs,
                }))?
            );
        }
    }
    Ok(())
}
