//! `csrd keys verify`: decrypts every stored private key (or a sample, or one tenant's) in
//! memory and checks it is its CSR's key. Also how a record that could not be handled is
//! reported, which `kek rewrap` shares.

use anyhow::Context;
use clap::{Args, Subcommand};
use secrecy::SecretString;

use super::session::{operator_event, outcome};
use super::tenant::TenantFilter;
use crate::audit::{Actor, AuditEvent};
use crate::db::build_pool;
use crate::settings::{DbSettings, secret};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Decrypt every stored private key in memory and check that it is its CSR's key. Prints
    /// each failure, then `N verified, N failed`; exits non-zero when anything failed.
    Verify(KeysVerifyArgs),
}

#[derive(Debug, Args)]
pub struct KeysVerifyArgs {
    #[command(flatten)]
    pub db: DbSettings,
    /// Key-encryption keys, as for the service.
    #[arg(long, env = "CSRD_KEKS", hide_env_values = true, value_parser = secret)]
    pub keks: SecretString,
    #[command(flatten)]
    pub tenant: TenantFilter,
    /// Only this many keys, picked at random.
    #[arg(long)]
    pub sample: Option<i64>,
}

pub(super) async fn run(command: KeysCommand, operator: &Actor) -> anyhow::Result<()> {
    let KeysCommand::Verify(args) = command;
    verify(args, operator).await
}

async fn verify(args: KeysVerifyArgs, operator: &Actor) -> anyhow::Result<()> {
    let owner = args.tenant.owner()?;
    let keyring = std::sync::Arc::new(crate::crypto::Keyring::from_secret(&args.keks)?);
    let pool = build_pool(&args.db.database_url, 2, "csrd-keys-verify")?;
    let plan = crate::custody::VerifyPlan {
        owner: owner.clone(),
        sample: sample_size(args.sample),
    };
    let summary = crate::custody::verify_keys(&pool, keyring, plan, print_failure, |checked| {
        eprintln!("keys verify: {checked} checked")
    })
    .await?;
    let client = pool.get().await.context("connecting to Postgres")?;
    let mut event = AuditEvent::new("keys.verify", outcome(summary.failed), operator.clone())
        .detail(serde_json::json!({
            "verified": summary.verified,
            "failed": summary.failed,
            "sample": args.sample,
        }));
    if let Some(owner) = &owner {
        event = event.owner(owner);
    }
    operator_event(&**client, event).await?;
    println!("{} verified, {} failed", summary.verified, summary.failed);
    if summary.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// `--sample N`: a sample of N keys; 0 or less (like no flag) verifies every key.
fn sample_size(flag: Option<i64>) -> Option<i64> {
    flag.filter(|n| *n > 0)
}

/// One record `keys verify` or `kek rewrap` could not handle, on stderr.
pub(super) fn print_failure(f: &crate::custody::Failure) {
    eprintln!("{}", failure_line(f));
}

/// Which record failed, whose, and why (never key bytes).
fn failure_line(f: &crate::custody::Failure) -> String {
    format!(
        "FAILED {} ({} {}): {}",
        f.id.0,
        f.owner.kind().as_str(),
        f.owner.id(),
        f.reason
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{CsrId, Owner, OwnerKind};

    #[test]
    fn a_sample_of_none_or_fewer_verifies_everything() {
        assert_eq!(sample_size(None), None);
        assert_eq!(sample_size(Some(0)), None);
        assert_eq!(sample_size(Some(-3)), None);
        assert_eq!(sample_size(Some(5)), Some(5));
    }

    #[test]
    fn a_failure_names_the_record_its_tenant_and_why() {
        let account = "023e105f4ecef8ad9ca31a8372d0c353";
        let id = uuid::Uuid::nil();
        let failure = crate::custody::Failure {
            id: CsrId(id),
            owner: Owner::parse(OwnerKind::Account, account).unwrap(),
            reason: "the key does not match the CSR".into(),
        };
        assert_eq!(
            failure_line(&failure),
            format!("FAILED {id} (account {account}): the key does not match the CSR")
        );
    }
}
