//! `csrd bench keygen|verify|list|create`: the command-line side of the benchmarks in `crate::bench`
//! (key generation speed, list-page latency, a create load against a running csrd).

use anyhow::{Context, bail};
use clap::Subcommand;

use crate::domain::KeyType;
use crate::settings::DbSettings;

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Key generation + CSR signing throughput, one core per thread.
    Keygen {
        /// `rsa2048`, `p256v1`, `rsa3072`, `rsa4096`, `p384`, or `all`.
        #[arg(long, default_value = "all")]
        key_type: String,
        /// Seconds to run each key type.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Parallel threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
    },
    /// Chain-link signature verification time per kind of CA key, beside the estimate csrd
    /// charges against a request's verification budget.
    Verify {
        /// Seconds to run each key type.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
    /// List-page latency for one tenant with many rows (seeds, measures, cleans up).
    List {
        /// Rows to seed for one account.
        #[arg(long, default_value_t = 100_000)]
        rows: u32,
        /// Timed queries per page.
        #[arg(long, default_value_t = 20)]
        samples: u32,
        #[command(flatten)]
        db: DbSettings,
    },
    /// A bounded create load against a running csrd (single creates or batches); prints
    /// throughput, latency percentiles (HDR histogram) and answers by status.
    Create {
        /// The API base (a bare host gets `/client/v4`), e.g. `http://127.0.0.1:8080`. Required:
        /// a load goes only where it is pointed.
        #[arg(long, alias = "url", env = "CSRD_BASE_URL")]
        base_url: String,
        /// A write token for the account or zone.
        #[arg(long, env = "CSRD_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, conflicts_with = "zone", required_unless_present = "zone")]
        account: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        /// A key type (`rsa2048`, `p256v1`, `rsa3072`, `rsa4096`, `p384`), or a weighted mix
        /// such as `p256v1=3,rsa2048=1`.
        #[arg(long, default_value = "rsa2048")]
        key_type: String,
        /// Total CSRs (the load stops after these).
        #[arg(long, default_value_t = 200)]
        requests: usize,
        /// Requests (or batches) in flight at once.
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Submit batches of this many items instead of single creates.
        #[arg(long)]
        batch_size: Option<usize>,
        /// Also write the report as JSON to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
}

pub(super) async fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Keygen {
            key_type,
            seconds,
            threads,
        } => {
            crate::bench::keygen::keygen(&key_types(&key_type)?, seconds, threads.max(1));
            Ok(())
        }
        BenchCommand::Verify { seconds } => crate::bench::verify::verify(seconds),
        BenchCommand::List { rows, samples, db } => {
            crate::bench::list::run(&db.database_url, rows, samples).await
        }
        BenchCommand::Create {
            base_url,
            token,
            account,
            zone,
            key_type,
            requests,
            concurrency,
            batch_size,
            json,
        } => {
            crate::bench::load::run(crate::bench::load::LoadPlan {
                api: crate::client::Api::new(&base_url, token, owner_path(account, zone)?)?,
                mix: crate::bench::load::parse_mix(&key_type)?,
                requests,
                concurrency,
                batch_size,
                json,
            })
            .await
        }
    }
}

/// `bench keygen --key-type`: one key type, or `all` of them.
fn key_types(flag: &str) -> anyhow::Result<Vec<KeyType>> {
    Ok(match flag {
        "all" => KeyType::ALL.to_vec(),
        k => vec![
            KeyType::parse(k)
                .context("key type must be rsa2048, p256v1, rsa3072, rsa4096, p384 or all")?,
        ],
    })
}

/// The API path of the tenant `bench create` loads; the id is used as given (`csrd batch`
/// checks its ids first, this never has).
fn owner_path(account: Option<String>, zone: Option<String>) -> anyhow::Result<String> {
    Ok(match (account, zone) {
        (Some(a), _) => format!("accounts/{a}"),
        (None, Some(z)) => format!("zones/{z}"),
        (None, None) => bail!("give --account or --zone"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keygen_takes_one_key_type_or_all() {
        assert_eq!(key_types("all").unwrap(), KeyType::ALL.to_vec());
        assert_eq!(key_types("p256v1").unwrap(), vec![KeyType::P256v1]);
        assert_eq!(
            key_types("ed25519").unwrap_err().to_string(),
            "key type must be rsa2048, p256v1, rsa3072, rsa4096, p384 or all"
        );
    }

    #[test]
    fn a_load_goes_to_the_account_or_the_zone() {
        assert_eq!(owner_path(Some("a".into()), None).unwrap(), "accounts/a");
        assert_eq!(owner_path(None, Some("z".into())).unwrap(), "zones/z");
        assert_eq!(
            owner_path(None, None).unwrap_err().to_string(),
            "give --account or --zone"
        );
    }
}
