//! `csrd certs expiring`: the custom certificates that expire soon, soonest first, as
//! tab-separated lines or JSON, for one tenant or all of them.

use anyhow::Context as _;
use clap::{Args, Subcommand};
use serde::Serialize;

use super::session::cli_client;
use super::tenant::TenantFilter;
use super::text::plain;
use crate::settings::DbSettings;

/// The longest window `--days` takes.
const MAX_DAYS: i64 = 36_525;

#[derive(Debug, Subcommand)]
pub enum CertsCommand {
    /// Certificates not yet expired that expire within `--days`.
    Expiring(ExpiringArgs),
}

#[derive(Debug, Args)]
pub struct ExpiringArgs {
    /// The window, in days from now (at most 36,525: a hundred years, past any certificate a
    /// CA issues).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u32).range(0..=MAX_DAYS))]
    pub days: u32,
    #[command(flatten)]
    pub tenant: TenantFilter,
    /// At most this many.
    #[arg(long, default_value_t = 10_000)]
    pub limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbSettings,
}

#[derive(Serialize)]
struct Expiring {
    id: String,
    owner_kind: &'static str,
    owner_id: String,
    custom_csr_id: String,
    hosts: Vec<String>,
    issuer: String,
    serial_number: String,
    expires_on: chrono::DateTime<chrono::Utc>,
}

pub(super) async fn run(command: CertsCommand) -> anyhow::Result<()> {
    let CertsCommand::Expiring(args) = command;
    let owner = args.tenant.owner()?;
    let before = chrono::Utc::now()
        .checked_add_signed(chrono::Duration::days(i64::from(args.days)))
        .context("--days is too far in the future")?;
    let client = cli_client(&args.db).await?;
    let found =
        crate::db::certificates::expiring(&**client, owner.as_ref(), before, args.limit.max(1))
            .await?;
    for c in found {
        let row = Expiring {
            id: c.id.to_string(),
            owner_kind: c.owner.kind().as_str(),
            owner_id: c.owner.id().to_owned(),
            custom_csr_id: c.custom_csr_id.to_string(),
            hosts: c.hosts,
            issuer: c.issuer,
            serial_number: c.serial_number,
            expires_on: c.expires_on,
        };
        if args.json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{}\t{}:{}\t{}\tcsr={}\t{}\t{}",
                row.expires_on.format("%Y-%m-%dT%H:%M:%SZ"),
                row.owner_kind,
                row.owner_id,
                row.id,
                row.custom_csr_id,
                plain(&row.hosts.join(",")),
                plain(&row.issuer),
            );
        }
    }
    Ok(())
}
