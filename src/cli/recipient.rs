//! `csrd recipient approve|list|revoke`: an operator's side of key delivery. Only an operator
//! can make a recipient active, and only by giving the fingerprint they checked with the
//! tenant (out of band); nothing in the API can. Each command is audited with the operator's
//! name.

use anyhow::bail;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::session::{cli_client, operator_event};
use super::tenant::TenantFilter;
use super::text::plain;
use crate::audit::{Actor, AuditEvent};
use crate::db::recipients::{self, Approval};
use crate::domain::{KeyRecipient, RecipientId};
use crate::settings::DbSettings;

#[derive(Debug, Subcommand)]
pub enum RecipientCommand {
    /// Make a pending key recipient active, if FINGERPRINT is its fingerprint (SHA-256 of its
    /// age recipient, hex, as enrollment answered and `recipient list` shows).
    ///
    /// Example: csrd recipient approve 01938f2a-7c1e-7d4b-9a51-2f6a1c2d3e4f --fingerprint 5d41…
    Approve(ApproveArgs),
    /// List key recipients, oldest first, as tab-separated lines or JSON.
    ///
    /// Example: csrd recipient list --zone 023e105f4ecef8ad9ca31a8372d0c353
    List(ListArgs),
    /// Revoke a key recipient at once (it receives nothing from then on).
    ///
    /// Example: csrd recipient revoke 01938f2a-7c1e-7d4b-9a51-2f6a1c2d3e4f
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The recipient's id.
    pub id: uuid::Uuid,
    /// Its fingerprint, 64 hex digits: compared with the stored one, so what is approved is
    /// the key the tenant meant.
    #[arg(long)]
    pub fingerprint: String,
    #[command(flatten)]
    pub db: DbSettings,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub tenant: TenantFilter,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    /// At most this many.
    #[arg(long, default_value_t = 10_000)]
    pub limit: i64,
    #[command(flatten)]
    pub db: DbSettings,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    pub id: uuid::Uuid,
    #[command(flatten)]
    pub db: DbSettings,
}

pub(super) async fn run(command: RecipientCommand, operator: &Actor) -> anyhow::Result<()> {
    match command {
        RecipientCommand::Approve(args) => approve(args, operator).await,
        RecipientCommand::List(args) => list(args).await,
        RecipientCommand::Revoke(args) => revoke(args, operator).await,
    }
}

fn operator_label(operator: &Actor) -> String {
    format!("operator:{}", operator.id().unwrap_or("-"))
}

fn event(
    action: &'static str,
    outcome: &'static str,
    operator: &Actor,
    r: &KeyRecipient,
) -> AuditEvent {
    AuditEvent::new(action, outcome, operator.clone())
        .owner(&r.owner)
        .target(r.id)
        .detail(serde_json::json!({
            "fingerprint": r.fingerprint,
            "name": r.name,
            "hosts": r.hosts,
        }))
}

async fn approve(args: ApproveArgs, operator: &Actor) -> anyhow::Result<()> {
    let fingerprint = args.fingerprint.trim().to_ascii_lowercase();
    if fingerprint.len() != 64 || !fingerprint.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("--fingerprint must be the recipient's SHA-256 fingerprint: 64 hex digits");
    }
    let client = cli_client(&args.db).await?;
    let id = RecipientId(args.id);
    match recipients::approve(&**client, id, &fingerprint, &operator_label(operator)).await? {
        Approval::Approved(r) => {
            operator_event(
                &**client,
                event("key_recipient.approve", "ok", operator, &r),
            )
            .await?;
            println!(
                "approved key recipient {} ({}) for {}:{}: it now receives keys for {}",
                r.id,
                plain(&r.name),
                r.owner.kind().as_str(),
                r.owner.id(),
                plain(&r.hosts.join(","))
            );
            Ok(())
        }
        Approval::NotFound => bail!("no key recipient has id {id}"),
        Approval::FingerprintMismatch(r) => {
            operator_event(
                &**client,
                event("key_recipient.approve", "denied", operator, &r).detail(
                    serde_json::json!({"reason": "fingerprint mismatch", "given": fingerprint}),
                ),
            )
            .await?;
            bail!(
                "the fingerprint given is not key recipient {id}'s: nothing was approved \
                 (check the recipient with the tenant again)"
            )
        }
        Approval::NotPending(r) => bail!(
            "key recipient {id} is {}: only a pending recipient can be approved",
            r.status.as_str()
        ),
    }
}

#[derive(Serialize)]
struct Listed<'a> {
    id: String,
    owner_kind: &'static str,
    owner_id: &'a str,
    name: &'a str,
    recipient: &'a str,
    fingerprint: &'a str,
    hosts: &'a [String],
    status: &'static str,
    created_at: chrono::DateTime<chrono::Utc>,
}

async fn list(args: ListArgs) -> anyhow::Result<()> {
    let owner = args.tenant.owner()?;
    let client = cli_client(&args.db).await?;
    for r in recipients::list_all(&**client, owner.as_ref(), args.limit.max(1)).await? {
        let row = Listed {
            id: r.id.to_string(),
            owner_kind: r.owner.kind().as_str(),
            owner_id: r.owner.id(),
            name: &r.name,
            recipient: &r.recipient,
            fingerprint: &r.fingerprint,
            hosts: &r.hosts,
            status: r.status.as_str(),
            created_at: r.created_at,
        };
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{}\t{}:{}\t{}\t{}\tfingerprint={}\thosts={}\t{}",
                row.id,
                row.owner_kind,
                row.owner_id,
                row.status,
                plain(row.name),
                row.fingerprint,
                plain(&row.hosts.join(",")),
                row.created_at.format("%Y-%m-%d %H:%M"),
            );
        }
    }
    Ok(())
}

async fn revoke(args: RevokeArgs, operator: &Actor) -> anyhow::Result<()> {
    let client = cli_client(&args.db).await?;
    let id = RecipientId(args.id);
    let Some(r) = recipients::revoke(&**client, None, id, &operator_label(operator)).await? else {
        bail!("no key recipient has id {id}");
    };
    operator_event(&**client, event("key_recipient.revoke", "ok", operator, &r)).await?;
    println!("revoked key recipient {id}");
    Ok(())
}
