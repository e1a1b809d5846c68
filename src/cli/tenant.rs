//! `csrd tenant limits set|show|clear`: operators' per-tenant overrides of the fair-share
//! weight, the request rate, an hourly item quota and the certificate caps. Stored in Postgres, so every ingress and
//! worker applies them (within `fairshare::policy::REFRESH`); audited like the other
//! operator commands. Also [`TenantFilter`], the `--account | --zone` pair that `audit` and
//! `keys verify` take too.

use anyhow::{Context, bail};
use clap::{Args, Subcommand};

use super::session::{cli_client, operator_event};
use crate::audit::{Actor, AuditEvent};
use crate::db::tenant_limits::{self, OverrideChanges, TenantOverride};
use crate::domain::Owner;
use crate::settings::DbSettings;

/// `--account ID | --zone ID`: one tenant's records only.
#[derive(Debug, Args)]
pub struct TenantFilter {
    /// Only this account's.
    #[arg(long, conflicts_with = "zone")]
    pub account: Option<String>,
    /// Only this zone's.
    #[arg(long)]
    pub zone: Option<String>,
}

impl TenantFilter {
    pub fn owner(&self) -> anyhow::Result<Option<crate::domain::Owner>> {
        use crate::domain::{Owner, OwnerKind};
        Ok(match (&self.account, &self.zone) {
            (Some(a), _) => {
                Some(Owner::parse(OwnerKind::Account, a).context("malformed account id")?)
            }
            (_, Some(z)) => Some(Owner::parse(OwnerKind::Zone, z).context("malformed zone id")?),
            _ => None,
        })
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Per-tenant overrides of the defaults (docs/operations.md, "Limits and abuse").
    #[command(subcommand)]
    Limits(LimitsCommand),
}

#[derive(Debug, Subcommand)]
pub enum LimitsCommand {
    /// Set (or change) a tenant's override; fields not given keep their value. Applies on
    /// every ingress and worker within 2 seconds.
    Set(SetArgs),
    /// Show one tenant's override, or every override.
    Show {
        #[command(flatten)]
        tenant: TenantFilter,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Remove a tenant's override: the defaults apply again.
    Clear {
        #[command(flatten)]
        tenant: TenantFilter,
        #[command(flatten)]
        db: DbSettings,
    },
}

#[derive(Debug, Args)]
pub struct SetArgs {
    #[command(flatten)]
    pub tenant: TenantFilter,
    /// Share of the keygen capacity against other busy tenants (default 1; 2 gets twice as
    /// much as a tenant of weight 1 while both wait).
    #[arg(long)]
    pub weight: Option<f64>,
    /// Requests per second, across every ingress (0: unlimited).
    #[arg(long)]
    pub rate: Option<f64>,
    /// Requests at once after a quiet spell (default: the rate times CSRD_TENANT_BURST /
    /// CSRD_TENANT_RATE).
    #[arg(long)]
    pub burst: Option<f64>,
    /// Items (single creates and batch items) accepted per clock hour, at most.
    #[arg(long)]
    pub items_per_hour: Option<i64>,
    /// Custom certificates one custom CSR may hold (default CSRD_TENANT_CERTIFICATES_PER_CSR).
    #[arg(long)]
    pub certificates_per_csr: Option<i64>,
    /// Bytes of custom certificates the tenant may store (default
    /// CSRD_TENANT_CERTIFICATE_BYTES).
    #[arg(long)]
    pub certificate_bytes: Option<i64>,
    /// Print the stored override as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbSettings,
}

impl SetArgs {
    fn changes(&self) -> anyhow::Result<OverrideChanges> {
        let changes = OverrideChanges {
            weight: self.weight,
            rate: self.rate,
            burst: self.burst,
            items_per_hour: self.items_per_hour,
            certificates_per_csr: self.certificates_per_csr,
            certificate_bytes: self.certificate_bytes,
        };
        if changes == OverrideChanges::default() {
            bail!(
                "give at least one of --weight, --rate, --burst, --items-per-hour, --certificates-per-csr, --certificate-bytes"
            );
        }
        let finite_and =
            |v: Option<f64>, ok: fn(f64) -> bool| v.is_none_or(|v| v.is_finite() && ok(v));
        if !finite_and(changes.weight, |w| w > 0.0) {
            bail!("--weight must be a number above 0");
        }
        if !finite_and(changes.rate, |r| r == 0.0 || r >= 0.001) {
            bail!("--rate must be 0 (unlimited) or at least 0.001 requests a second");
        }
        if !finite_and(changes.burst, |b| b >= 1.0) {
            bail!("--burst must be a number from 1");
        }
        if changes.items_per_hour.is_some_and(|n| n < 0) {
            bail!("--items-per-hour must be 0 or more");
        }
        if changes.certificates_per_csr.is_some_and(|n| n < 0) {
            bail!("--certificates-per-csr must be 0 or more");
        }
        if changes.certificate_bytes.is_some_and(|n| n < 0) {
            bail!("--certificate-bytes must be 0 or more");
        }
        Ok(changes)
    }
}

fn tenant(filter: &TenantFilter) -> anyhow::Result<Owner> {
    filter.owner()?.context("give --account ID or --zone ID")
}

pub async fn run(command: TenantCommand, operator: &Actor) -> anyhow::Result<()> {
    let TenantCommand::Limits(command) = command;
    match command {
        LimitsCommand::Set(args) => {
            let owner = tenant(&args.tenant)?;
            let changes = args.changes()?;
            let client = cli_client(&args.db).await?;
            let stored = tenant_limits::set(&**client, &owner, &changes).await?;
            operator_event(
                &**client,
                AuditEvent::new("tenant.limits.set", "ok", operator.clone())
                    .owner(&owner)
                    .target(format!("{}:{}", owner.kind().as_str(), owner.id()))
                    .detail(serde_json::json!({
                        "weight": changes.weight,
                        "rate": changes.rate,
                        "burst": changes.burst,
                        "items_per_hour": changes.items_per_hour,
                        "certificates_per_csr": changes.certificates_per_csr,
                        "certificate_bytes": changes.certificate_bytes,
                    })),
            )
            .await?;
            print(&stored, args.json);
            Ok(())
        }
        LimitsCommand::Show { tenant, json, db } => {
            let client = cli_client(&db).await?;
            let shown = match tenant.owner()? {
                Some(owner) => tenant_limits::get(&**client, &owner)
                    .await?
                    .into_iter()
                    .collect(),
                None => tenant_limits::all(&**client).await?,
            };
            for o in &shown {
                print(o, json);
            }
            if shown.is_empty() && !json {
                eprintln!("no override: the defaults apply");
            }
            Ok(())
        }
        LimitsCommand::Clear { tenant: filter, db } => {
            let owner = tenant(&filter)?;
            let client = cli_client(&db).await?;
            if !tenant_limits::clear(&**client, &owner).await? {
                bail!("{} {} has no override", owner.kind().as_str(), owner.id());
            }
            operator_event(
                &**client,
                AuditEvent::new("tenant.limits.clear", "ok", operator.clone())
                    .owner(&owner)
                    .target(format!("{}:{}", owner.kind().as_str(), owner.id())),
            )
            .await?;
            println!(
                "cleared the override of {} {}",
                owner.kind().as_str(),
                owner.id()
            );
            Ok(())
        }
    }
}

/// One override: a JSON object, or a tab-separated line where `-` means "the default".
fn print(o: &TenantOverride, json: bool) {
    if json {
        println!("{}", serde_json::to_string(o).unwrap_or_default());
        return;
    }
    let or_default = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    println!(
        "{}:{}\tweight={}\trate={}\tburst={}\titems_per_hour={}\tcertificates_per_csr={}\tcertificate_bytes={}\tupdated {}",
        o.owner_kind,
        o.owner_id,
        or_default(o.weight.map(|w| w.to_string())),
        or_default(o.rate.map(|r| format!("{r}/s"))),
        or_default(o.burst.map(|b| b.to_string())),
        or_default(o.items_per_hour.map(|n| n.to_string())),
        or_default(o.certificates_per_csr.map(|n| n.to_string())),
        or_default(o.certificate_bytes.map(|n| n.to_string())),
        o.updated_at.format("%Y-%m-%dT%H:%M:%SZ")
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::OwnerKind;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const ZONE: &str = "9a7806061c88ada191ed06f989cc3dac";

    fn filter(account: Option<&str>, zone: Option<&str>) -> TenantFilter {
        TenantFilter {
            account: account.map(Into::into),
            zone: zone.map(Into::into),
        }
    }

    #[test]
    fn the_filter_names_an_account_a_zone_or_everyone() {
        let account = filter(Some(ACCOUNT), None).owner().unwrap().unwrap();
        assert_eq!(account.kind(), OwnerKind::Account);
        assert_eq!(account.id(), ACCOUNT);
        let zone = filter(None, Some(ZONE)).owner().unwrap().unwrap();
        assert_eq!(zone.kind(), OwnerKind::Zone);
        assert_eq!(zone.id(), ZONE);
        assert!(filter(None, None).owner().unwrap().is_none());
    }

    #[test]
    fn a_malformed_tenant_id_is_refused() {
        let why = |f: TenantFilter| f.owner().unwrap_err().to_string();
        assert_eq!(why(filter(Some("ACCOUNT"), None)), "malformed account id");
        assert_eq!(why(filter(None, Some("zone"))), "malformed zone id");
    }

    #[test]
    fn limits_need_a_tenant() {
        let why = tenant(&filter(None, None)).unwrap_err().to_string();
        assert_eq!(why, "give --account ID or --zone ID");
    }
}
