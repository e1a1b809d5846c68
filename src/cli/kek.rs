//! `csrd kek generate|rewrap|status`: key-encryption keys. `generate` prints a new CSRD_KEKS
//! entry, `rewrap` moves every record's data key under the active KEK, `status` shows what each
//! KEK still wraps and how much of its nonce budget it has used.

use anyhow::Context;
use chrono::{DateTime, Utc};
use clap::Subcommand;
use secrecy::SecretString;

use super::keys::print_failure;
use super::session::{cli_client, operator_event, outcome};
use crate::audit::{Actor, AuditEvent};
use crate::crypto::{KekId, Keyring};
use crate::db::build_pool;
use crate::settings::{DbSettings, secret};

#[derive(Debug, Subcommand)]
pub enum KekCommand {
    /// Print a new `id:base64key` entry for CSRD_KEKS.
    Generate {
        /// The KEK id (default: kek-YYYYMMDD).
        #[arg(long)]
        id: Option<String>,
    },
    /// Re-wrap every record's data key under the active (first) KEK, leaving the key
    /// ciphertexts as they are. Batched, resumable (run it again), safe while the service runs.
    /// Prints each failure, then `N rewrapped, N skipped, N failed`; exits non-zero on failures.
    Rewrap {
        /// Key-encryption keys, as for the service: the active one first, then every KEK that
        /// still wraps records.
        #[arg(long, env = "CSRD_KEKS", hide_env_values = true, value_parser = secret)]
        keks: SecretString,
        #[command(flatten)]
        db: DbSettings,
    },
    /// How many stored keys each KEK id wraps, and which of them CSRD_KEKS holds.
    Status {
        /// Key-encryption keys, as for the service (optional: without them only counts).
        #[arg(long, env = "CSRD_KEKS", hide_env_values = true, value_parser = secret)]
        keks: Option<SecretString>,
        #[command(flatten)]
        db: DbSettings,
    },
}

pub(super) async fn run(command: KekCommand, operator: &Actor) -> anyhow::Result<()> {
    match command {
        KekCommand::Status { keks, db } => status(keks, db).await,
        KekCommand::Rewrap { keks, db } => rewrap(keks, db, operator).await,
        KekCommand::Generate { id } => generate(id),
    }
}

fn generate(id: Option<String>) -> anyhow::Result<()> {
    let id = id.unwrap_or_else(|| default_id(Utc::now()));
    let id = KekId::parse(&id).context("KEK ids are 1-64 of A-Z a-z 0-9 _ . -")?;
    println!("{}", Keyring::generate_entry(&id).as_str());
    Ok(())
}

/// The id of a KEK generated `now` without `--id`: its day, so ids sort by age.
fn default_id(now: DateTime<Utc>) -> String {
    format!("kek-{}", now.format("%Y%m%d"))
}

async fn rewrap(keks: SecretString, db: DbSettings, operator: &Actor) -> anyhow::Result<()> {
    let keyring = std::sync::Arc::new(Keyring::from_secret(&keks)?);
    let pool = build_pool(&db.database_url, 2, "csrd-kek-rewrap")?;
    let backlog = crate::custody::rewrap_backlog(&pool, &keyring).await?;
    let progress = crate::client::progress::Progress::new("kek rewrap", backlog, 0);
    let started = std::time::Instant::now();
    let summary = crate::custody::rewrap_all(&pool, keyring.clone(), print_failure, |n| {
        progress.advance(n)
    })
    .await?;
    progress.finish();
    eprintln!(
        "kek rewrap: {:.1} s; records now wrapped by each KEK:",
        started.elapsed().as_secs_f64()
    );
    let client = pool.get().await.context("connecting to Postgres")?;
    for (id, records, _) in crate::db::keks::usage(&client).await? {
        let note = after_rewrap_note(id == keyring.active().id().as_str(), records);
        eprintln!("  {id}\t{records}{note}");
    }
    operator_event(
        &**client,
        AuditEvent::new("kek.rewrap", outcome(summary.failed), operator.clone())
            .target(keyring.active().id().as_str())
            .detail(serde_json::json!({
                "rewrapped": summary.rewrapped,
                "skipped": summary.skipped,
                "failed": summary.failed,
            })),
    )
    .await?;
    println!(
        "{} rewrapped, {} skipped, {} failed",
        summary.rewrapped, summary.skipped, summary.failed
    );
    if summary.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

/// What a rewrap says of a KEK after the run: whether it may be removed from CSRD_KEKS yet.
fn after_rewrap_note(active: bool, records: i64) -> &'static str {
    if active {
        " (active)"
    } else if records > 0 {
        " (still needed: do not remove this KEK yet)"
    } else {
        ""
    }
}

async fn status(keks: Option<SecretString>, db: DbSettings) -> anyhow::Result<()> {
    let keyring = keks.as_ref().map(Keyring::from_secret).transpose()?;
    let client = cli_client(&db).await?;
    if let Some(keyring) = &keyring {
        crate::db::keks::verify_known_keks(&client, keyring).await?;
    }
    let wraps: std::collections::HashMap<String, i64> =
        crate::db::keks::wraps(&client).await?.into_iter().collect();
    let mut seen = std::collections::BTreeSet::new();
    for (id, records, checked) in crate::db::keks::usage(&client).await? {
        let role = kek_role(keyring.as_ref(), &id, records);
        let check = if checked {
            "check value stored"
        } else {
            "no check value"
        };
        println!("{id}\t{records} records\t{check}\t{role}");
        println!("{}", nonce_line(&id, wraps.get(&id).copied().unwrap_or(0)));
        seen.insert(id);
    }
    for kek in keyring.iter().flat_map(|k| k.all()) {
        if !seen.contains(kek.id().as_str()) {
            println!(
                "{}\t0 records\tno check value\tconfigured, never used",
                kek.id().as_str()
            );
        }
    }
    Ok(())
}

/// What a stored KEK id is to the given keyring (nothing without one).
fn kek_role(keyring: Option<&Keyring>, id: &str, records: i64) -> &'static str {
    match keyring {
        None => "",
        Some(k) if k.active().id().as_str() == id => "active (encrypts new records)",
        Some(k) if k.get(id).is_some() => "configured (decrypts)",
        Some(_) if records == 0 => "not configured, wraps nothing: retired",
        Some(_) => "NOT CONFIGURED: its records cannot be opened",
    }
}

/// How much of its nonce budget a KEK has used in `used` wraps, and whether to rotate it.
fn nonce_line(id: &str, used: i64) -> String {
    let (share, rotate) = crate::custody::nonce_budget(used);
    format!(
        "{id}\tnonce budget: {used} wraps, {:.4}% of 2^32{}",
        share * 100.0,
        if rotate {
            " - ROTATE: add a new KEK, promote it, rewrap"
        } else {
            ""
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn a_default_id_names_the_day() {
        let at = Utc.with_ymd_and_hms(2026, 1, 2, 23, 59, 0).unwrap();
        assert_eq!(default_id(at), "kek-20260102");
        assert!(KekId::parse(&default_id(at)).is_some());
    }

    #[test]
    fn a_rewrap_says_which_keks_are_still_needed() {
        assert_eq!(after_rewrap_note(true, 10), " (active)");
        assert_eq!(
            after_rewrap_note(false, 1),
            " (still needed: do not remove this KEK yet)"
        );
        assert_eq!(after_rewrap_note(false, 0), "");
    }

    fn keyring(ids: &[&str]) -> Keyring {
        let entries: Vec<String> = ids
            .iter()
            .map(|id| {
                Keyring::generate_entry(&KekId::parse(id).unwrap())
                    .as_str()
                    .to_owned()
            })
            .collect();
        Keyring::parse(&entries.join(",")).unwrap()
    }

    #[test]
    fn a_kek_role_says_whether_its_records_can_be_opened() {
        let k = keyring(&["new", "old"]);
        assert_eq!(kek_role(None, "new", 1), "");
        assert_eq!(
            kek_role(Some(&k), "new", 1),
            "active (encrypts new records)"
        );
        assert_eq!(kek_role(Some(&k), "old", 1), "configured (decrypts)");
        assert_eq!(
            kek_role(Some(&k), "gone", 0),
            "not configured, wraps nothing: retired"
        );
        assert_eq!(
            kek_role(Some(&k), "gone", 1),
            "NOT CONFIGURED: its records cannot be opened"
        );
    }

    #[test]
    fn the_nonce_line_warns_past_the_budget() {
        assert_eq!(
            nonce_line("kek-1", 0),
            "kek-1\tnonce budget: 0 wraps, 0.0000% of 2^32"
        );
        let worn = nonce_line("kek-1", 1 << 32);
        assert!(
            worn.ends_with("100.0000% of 2^32 - ROTATE: add a new KEK, promote it, rewrap"),
            "{worn}"
        );
    }
}
