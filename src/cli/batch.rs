//! `csrd batch`: the command-line side of `crate::client::batch`, which creates a CSR for
//! every line of a file through the API, resumably. Here: the flags, the token and tenant they
//! name, the `--timeout` on the whole run, and the summary line and exit code.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;

use crate::client::batch::Summary;
use crate::domain::{AccountId, ZoneId};

#[derive(Debug, Args)]
pub struct BatchArgs {
    /// The API base (`http://127.0.0.1:8080` or `…/client/v4`; a bare host gets `/client/v4`).
    #[arg(long)]
    pub url: String,
    /// The account to create the CSRs in.
    #[arg(long, conflicts_with = "zone", required_unless_present = "zone")]
    pub account: Option<String>,
    /// The zone to create the CSRs in.
    #[arg(long)]
    pub zone: Option<String>,
    /// JSONL (one create body per line) or CSV (header row of field names, `sans` split by `;`).
    #[arg(
        long,
        required_unless_present = "certificates",
        conflicts_with = "certificates"
    )]
    pub input: Option<std::path::PathBuf>,
    /// Upload certificates instead of creating CSRs: JSONL of `{"custom_csr_id",
    /// "certificate"}`, or a directory of PEM files named `<custom_csr_id>.pem`. Each is checked
    /// against its CSR's key; the output has each one's id or errors.
    #[arg(long)]
    pub certificates: Option<std::path::PathBuf>,
    /// JSONL, one line per input line, in input order: the created CSR (with `line`) or its
    /// errors. `<output>.partial` beside it holds the progress of an interrupted run.
    #[arg(long)]
    pub output: std::path::PathBuf,
    /// API token (default: CSRD_TOKEN, then CLOUDFLARE_API_TOKEN).
    #[arg(long, hide_env_values = true)]
    pub token: Option<String>,
    /// The input's format (default: from its extension: .jsonl, .ndjson, .json are JSONL,
    /// .csv is CSV; any other extension needs this flag).
    #[arg(long, value_enum)]
    pub format: Option<crate::client::input::Format>,
    /// Items per submitted batch (1-10,000).
    #[arg(long, default_value_t = 5000)]
    pub batch_size: usize,
    /// Bytes of JSON per submitted batch at most (the API takes 32 MiB); a group is cut at
    /// whichever of --batch-size and this comes first.
    #[arg(long, env = "CSRD_CLIENT_MAX_BATCH_BYTES", default_value_t = crate::client::batch::DEFAULT_GROUP_BYTES)]
    pub max_batch_bytes: usize,
    /// Batches in flight at once (without the batch API: 8x as many single creates).
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Seconds one request is retried while the API answers "later" (no connection, 429,
    /// 502-504, honouring Retry-After but at least 1 s apart) before the run stops.
    #[arg(long, env = "CSRD_CLIENT_RETRY_BUDGET_SECS", default_value_t = 300)]
    pub retry_budget: u64,
    /// Seconds a batch (or a create answered 202) may go without progress before the run
    /// stops.
    #[arg(long, env = "CSRD_CLIENT_STALL_SECS", default_value_t = 600)]
    pub stall_timeout: u64,
    /// Seconds one HTTP request may take, from connecting to the answer's last byte.
    #[arg(long, env = "CSRD_CLIENT_REQUEST_TIMEOUT_SECS", default_value_t = 120)]
    pub request_timeout: u64,
    /// Seconds the whole run may take before it stops (0: no limit); run it again to go on.
    #[arg(long, env = "CSRD_CLIENT_TIMEOUT_SECS", default_value_t = 0)]
    pub timeout: u64,
}

impl BatchArgs {
    fn owner_path(&self) -> anyhow::Result<String> {
        match (&self.account, &self.zone) {
            (Some(a), None) => {
                AccountId::parse(a)
                    .with_context(|| format!("account id {a:?} is not 32 lowercase hex"))?;
                Ok(format!("accounts/{a}"))
            }
            (None, Some(z)) => {
                ZoneId::parse(z)
                    .with_context(|| format!("zone id {z:?} is not 32 lowercase hex"))?;
                Ok(format!("zones/{z}"))
            }
            _ => bail!("give --account or --zone"),
        }
    }

    fn token(&self) -> anyhow::Result<String> {
        resolve_token(self.token.clone(), |name| std::env::var(name).ok())
    }
}

/// `--token`, else CSRD_TOKEN, else CLOUDFLARE_API_TOKEN; the first one set is used, and an
/// empty one is refused rather than passed over.
fn resolve_token(
    flag: Option<String>,
    env: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<String> {
    flag.or_else(|| env("CSRD_TOKEN"))
        .or_else(|| env("CLOUDFLARE_API_TOKEN"))
        .filter(|t| !t.is_empty())
        .context("give --token, or set CSRD_TOKEN or CLOUDFLARE_API_TOKEN")
}

/// Runs the batch, prints `N created, N failed` and exits 1 when any line failed.
pub(super) async fn run(args: BatchArgs) -> anyhow::Result<()> {
    let summary = run_batch(args).await?;
    println!("{} created, {} failed", summary.created, summary.failed);
    if summary.failed > 0 {
        std::process::exit(1);
    }
    Ok(())
}

async fn run_batch(args: BatchArgs) -> anyhow::Result<Summary> {
    let api = crate::client::Api::with_request_timeout(
        &args.url,
        args.token()?,
        args.owner_path()?,
        Duration::from_secs(args.request_timeout.max(1)),
    )?;
    let partial = crate::client::output::partial_path(&args.output);
    let budgets = crate::client::Budgets {
        retry: Duration::from_secs(args.retry_budget),
        stall: Duration::from_secs(args.stall_timeout),
    };
    if let Some(certificates) = args.certificates {
        let run = crate::client::certificates::run(crate::client::certificates::CertificatePlan {
            api,
            input: certificates,
            output: args.output,
            group_size: args.batch_size.min(2000),
            group_bytes: args.max_batch_bytes,
            concurrency: args.concurrency,
            budgets,
        });
        return within(args.timeout, &partial, run).await;
    }
    let Some(input) = args.input else {
        bail!("give --input or --certificates");
    };
    let run = crate::client::batch::run(crate::client::batch::BatchPlan {
        api,
        input,
        format: args.format,
        output: args.output,
        group_size: args.batch_size,
        group_bytes: args.max_batch_bytes,
        concurrency: args.concurrency,
        budgets,
    });
    within(args.timeout, &partial, run).await
}

/// The run, stopped after `timeout` seconds (0: no limit).
async fn within(
    timeout: u64,
    partial: &std::path::Path,
    run: impl std::future::Future<Output = anyhow::Result<Summary>>,
) -> anyhow::Result<Summary> {
    if timeout == 0 {
        return run.await;
    }
    match tokio::time::timeout(Duration::from_secs(timeout), run).await {
        Ok(summary) => summary,
        Err(_) => bail!(
            "stopped after {timeout} s (--timeout); what is settled is in {}: run the same \
             command again to go on",
            partial.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    const ACCOUNT: &str = "023e105f4ecef8ad9ca31a8372d0c353";
    const ZONE: &str = "9a7806061c88ada191ed06f989cc3dac";

    /// The flags under test, parsed as `csrd batch` parses them.
    #[derive(Debug, Parser)]
    struct Batch {
        #[command(flatten)]
        args: BatchArgs,
    }

    fn args(tenant: &[&str]) -> BatchArgs {
        let required = [
            "--url", "http://h", "--input", "in.jsonl", "--output", "out",
        ];
        let argv = std::iter::once("batch")
            .chain(required)
            .chain(tenant.iter().copied());
        Batch::try_parse_from(argv).unwrap().args
    }

    #[test]
    fn the_tenant_is_an_account_or_a_zone_of_well_formed_id() {
        assert_eq!(
            args(&["--account", ACCOUNT]).owner_path().unwrap(),
            format!("accounts/{ACCOUNT}")
        );
        assert_eq!(
            args(&["--zone", ZONE]).owner_path().unwrap(),
            format!("zones/{ZONE}")
        );
        assert_eq!(
            format!("{:#}", args(&["--zone", "Z"]).owner_path().unwrap_err()),
            r#"zone id "Z" is not 32 lowercase hex"#
        );
        assert_eq!(
            format!("{:#}", args(&["--account", "a"]).owner_path().unwrap_err()),
            r#"account id "a" is not 32 lowercase hex"#
        );
    }

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_token_is_the_flag_then_csrd_token_then_cloudflare_api_token() {
        let both = [("CSRD_TOKEN", "csrd"), ("CLOUDFLARE_API_TOKEN", "cf")];
        assert_eq!(
            resolve_token(Some("flag".into()), env(&both)).unwrap(),
            "flag"
        );
        assert_eq!(resolve_token(None, env(&both)).unwrap(), "csrd");
        assert_eq!(resolve_token(None, env(&both[1..])).unwrap(), "cf");
    }

    #[test]
    fn an_empty_token_is_refused_not_passed_over() {
        let why = "give --token, or set CSRD_TOKEN or CLOUDFLARE_API_TOKEN";
        let cf = [("CLOUDFLARE_API_TOKEN", "cf")];
        assert_eq!(resolve_token(None, env(&[])).unwrap_err().to_string(), why);
        assert_eq!(
            resolve_token(Some(String::new()), env(&cf))
                .unwrap_err()
                .to_string(),
            why
        );
        let empty_first = [("CSRD_TOKEN", ""), ("CLOUDFLARE_API_TOKEN", "cf")];
        assert_eq!(
            resolve_token(None, env(&empty_first))
                .unwrap_err()
                .to_string(),
            why
        );
    }
}
