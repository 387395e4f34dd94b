//! What `serve` runs beside the API for issue 5: the periodic anomaly evaluation and the outbox
//! delivery worker (webhook and SMTP), and their flags. Both are safe with several servers on
//! one PostgreSQL database: alerts are unique per metric/user/window in the database, outbox
//! messages are leased.

use anyhow::{Result, bail};
use clap::{Args, ValueEnum};
use custodian_notify::{DeliveryConfig, OutboxWorker, SmtpConfig, SmtpSecurity, WebhookConfig};
use custodian_service::Service;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum SmtpSecurityArg {
    None,
    Starttls,
    Tls,
}

#[derive(Args, Clone, Debug)]
pub struct MonitorArgs {
    /// Evaluate the anomaly alert rules this often (seconds). Servers sharing a database
    /// evaluate once per period between them (a lease in the database); 0 turns evaluation off
    /// on this server (another server sharing the database may still run it).
    #[arg(long, env = "CUSTODIAN_ALERT_EVERY_SECS", default_value_t = 60)]
    pub alert_every_secs: u64,
    /// URL that alerts and change notifications are POSTed to (JSON, signed with
    /// HMAC-SHA256 of CUSTODIAN_WEBHOOK_SECRET in the X-Custodian-Signature header).
    #[arg(long, env = "CUSTODIAN_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// SMTP server for alert and notification mail.
    #[arg(long, env = "CUSTODIAN_SMTP_HOST")]
    pub smtp_host: Option<String>,
    #[arg(long, env = "CUSTODIAN_SMTP_PORT", default_value_t = 587)]
    pub smtp_port: u16,
    #[arg(long, env = "CUSTODIAN_SMTP_SECURITY", value_enum, default_value_t = SmtpSecurityArg::Starttls)]
    pub smtp_security: SmtpSecurityArg,
    /// Sender address, e.g. "Custodian <custodian@example.com>".
    #[arg(long, env = "CUSTODIAN_SMTP_FROM")]
    pub smtp_from: Option<String>,
    /// Recipient address; repeatable (or comma-separated in the environment variable).
    #[arg(long = "smtp-to", env = "CUSTODIAN_SMTP_TO", value_delimiter = ',')]
    pub smtp_to: Vec<String>,
    /// SMTP user; the password is read from CUSTODIAN_SMTP_PASSWORD.
    #[arg(long, env = "CUSTODIAN_SMTP_USERNAME")]
    pub smtp_username: Option<String>,
}

impl MonitorArgs {
    /// The delivery configuration; secrets come from the environment only (never argv).
    pub fn delivery(&self) -> Result<DeliveryConfig> {
        let mut config = DeliveryConfig::new(custodian_audit::writer::default_claimant());
        if let Some(url) = &self.webhook_url {
            let secret = std::env::var("CUSTODIAN_WEBHOOK_SECRET").unwrap_or_default();
            if secret.len() < 16 {
                bail!("--webhook-url needs CUSTODIAN_WEBHOOK_SECRET (at least 16 characters) to sign the requests");
            }
            if !(url.starts_with("https://") || url.starts_with("http://")) {
                bail!("--webhook-url must be an http(s) URL");
            }
            config.webhook = Some(WebhookConfig { url: url.clone(), secret: secret.into_bytes() });
        }
        if let Some(host) = &self.smtp_host {
            let Some(from) = self.smtp_from.clone() else { bail!("--smtp-host needs --smtp-from") };
            if self.smtp_to.is_empty() {
                bail!("--smtp-host needs at least one --smtp-to");
            }
            let credentials = self
                .smtp_username
                .as_ref()
                .map(|user| (user.clone(), std::env::var("CUSTODIAN_SMTP_PASSWORD").unwrap_or_default()));
            config.smtp = Some(SmtpConfig {
                host: host.clone(),
                port: self.smtp_port,
                security: match self.smtp_security {
                    SmtpSecurityArg::None => SmtpSecurity::None,
                    SmtpSecurityArg::Starttls => SmtpSecurity::StartTls,
                    SmtpSecurityArg::Tls => SmtpSecurity::Tls,
                },
                from,
                to: self.smtp_to.clone(),
                credentials,
            });
        }
        Ok(config)
    }
}

/// The background jobs of one server.
pub struct MonitorTasks {
    stop: watch::Sender<bool>,
    handles: Vec<JoinHandle<()>>,
}

impl MonitorTasks {
    pub fn spawn(service: Arc<Service>, args: &MonitorArgs, delivery: DeliveryConfig) -> Result<MonitorTasks> {
        let (stop, stopped) = watch::channel(false);
        let mut handles = Vec::new();
        if delivery.webhook.is_some() || delivery.smtp.is_some() {
            let worker = OutboxWorker::new(service.store().clone(), delivery)?;
            tracing::info!(channels = ?worker.config().channels(), "delivering alerts and notifications");
            handles.push(tokio::spawn(worker.run(stopped.clone())));
        }
        if args.alert_every_secs > 0 {
            // Every server polls; the lease in the database lets one of them evaluate, once per
            // period. Polling at a quarter of the period keeps the gap between two evaluations
            // under 1.25 periods whichever server runs them.
            let every_secs = args.alert_every_secs;
            let tick = Duration::from_secs(every_secs).div_f64(4.0).max(Duration::from_secs(1));
            let holder = custodian_audit::writer::default_claimant();
            let mut stopped = stopped;
            handles.push(tokio::spawn(async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(tick) => {}
                        _ = stopped.changed() => return,
                    }
                    match service.evaluate_alerts_if_due(&holder, custodian_store::now_micros(), every_secs).await {
                        Ok(Some(raised)) => tracing::debug!(raised = raised.len(), "anomaly evaluation done"),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(error = %e, "anomaly evaluation failed"),
                    }
                }
            }));
        }
        Ok(MonitorTasks { stop, handles })
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for h in self.handles {
            let _ = h.await;
        }
    }
}
