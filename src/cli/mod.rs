//! Command-line interface. Subcommand names, flags and output lines are contracts that scripts,
//! the compose file and operators rely on (README, "Commands"): change them only deliberately.

mod tenant;
mod text;

use text::plain;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};

use crate::audit::{Actor, AuditEvent};
use crate::auth::{ApiKey, ApiToken, Permission, Scope};
use crate::crypto::{KekId, Keyring};
use crate::db::{build_pool, credentials};
use crate::domain::{AccountId, KeyType, ZoneId};
use crate::settings::secret;
use crate::settings::{DbSettings, Settings};
use crate::startup::{self, Role};
use secrecy::SecretString;

#[derive(Debug, Parser)]
#[command(
    name = "csrd",
    version,
    about = "Cloudflare-compatible Custom CSR service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run ingress and workers in one process (applies migrations first).
    Serve(Settings),
    /// Run the HTTP ingress only.
    Ingress(Settings),
    /// Run the key-generation workers only.
    Worker(Settings),
    /// Apply database migrations.
    Migrate(DbSettings),
    /// Manage API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage legacy X-Auth-Email / X-Auth-Key users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage key-encryption keys.
    #[command(subcommand)]
    Kek(KekCommand),
    /// Check the stored private keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Measure key generation and CSR signing speed.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Create a CSR for every line of a JSONL or CSV file through the API, resumably.
    Batch(BatchArgs),
    /// Read the audit log, oldest first: creates, deletes, batch submissions, refused callers,
    /// token, user, KEK and tenant-limit operations.
    Audit(AuditArgs),
    /// Manage per-tenant limits and fair-share weights.
    #[command(subcommand)]
    Tenant(tenant::TenantCommand),
}

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

#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub tenant: TenantFilter,
    /// Only events since then: an RFC 3339 time (`2026-11-27T12:00:00Z`) or an age (`90s`,
    /// `15m`, `2h`, `7d`).
    #[arg(long)]
    pub since: Option<String>,
    /// Only this action (`csr.create`) or family (`csr`, `token`, `auth`).
    #[arg(long)]
    pub action: Option<String>,
    /// The newest this many events, at most.
    #[arg(long, default_value_t = 1000)]
    pub limit: i64,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub db: DbSettings,
}

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
    #[arg(long)]
    pub input: std::path::PathBuf,
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
        self.token
            .clone()
            .or_else(|| std::env::var("CSRD_TOKEN").ok())
            .or_else(|| std::env::var("CLOUDFLARE_API_TOKEN").ok())
            .filter(|t| !t.is_empty())
            .context("give --token, or set CSRD_TOKEN or CLOUDFLARE_API_TOKEN")
    }
}

async fn run_batch(args: BatchArgs) -> anyhow::Result<crate::client::batch::Summary> {
    use std::time::Duration;
    let api = crate::client::Api::with_request_timeout(
        &args.url,
        args.token()?,
        args.owner_path()?,
        Duration::from_secs(args.request_timeout.max(1)),
    )?;
    let partial = crate::client::output::partial_path(&args.output);
    let run = crate::client::batch::run(crate::client::batch::BatchPlan {
        api,
        input: args.input,
        format: args.format,
        output: args.output,
        group_size: args.batch_size,
        group_bytes: args.max_batch_bytes,
        concurrency: args.concurrency,
        budgets: crate::client::Budgets {
            retry: Duration::from_secs(args.retry_budget),
            stall: Duration::from_secs(args.stall_timeout),
        },
    });
    if args.timeout == 0 {
        return run.await;
    }
    match tokio::time::timeout(Duration::from_secs(args.timeout), run).await {
        Ok(summary) => summary,
        Err(_) => bail!(
            "stopped after {} s (--timeout); what is settled is in {}: run the same command again \
             to go on",
            args.timeout,
            partial.display()
        ),
    }
}

#[derive(Debug, Args)]
pub struct ScopeArgs {
    /// An account the credential may act on (repeatable).
    #[arg(long = "account")]
    pub accounts: Vec<String>,
    /// A zone the credential may act on (repeatable).
    #[arg(long = "zone")]
    pub zones: Vec<String>,
}

impl ScopeArgs {
    fn parse(&self) -> anyhow::Result<Scope> {
        let scope = Scope {
            accounts: self
                .accounts
                .iter()
                .map(|a| {
                    AccountId::parse(a)
                        .with_context(|| format!("account id {a:?} is not 32 lowercase hex"))
                })
                .collect::<anyhow::Result<_>>()?,
            zones: self
                .zones
                .iter()
                .map(|z| {
                    ZoneId::parse(z)
                        .with_context(|| format!("zone id {z:?} is not 32 lowercase hex"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        if scope.is_empty() {
            bail!("give at least one --account or --zone");
        }
        Ok(scope)
    }
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token; prints the token alone on stdout (it is shown only once).
    Create {
        #[command(flatten)]
        scope: ScopeArgs,
        /// `read` (list, get) or `write` (everything).
        #[arg(long, value_parser = ["read", "write"])]
        permission: String,
        /// A label for the token.
        #[arg(long)]
        name: Option<String>,
        /// Expire the token after this many days (1 to 36,500).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=36_500))]
        expires_in_days: Option<u32>,
        #[command(flatten)]
        db: DbSettings,
    },
    /// List the tokens (never their secrets): id, public prefix, scope, expiry, revocation.
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Revoke a token by its id (from `token list`); it stops working within
    /// CSRD_CREDENTIAL_CACHE_MS on every ingress.
    Revoke {
        id: uuid::Uuid,
        #[command(flatten)]
        db: DbSettings,
    },
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user (or give an existing one a new key); prints the global API key alone on stdout.
    Create {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        db: DbSettings,
    },
    /// List the legacy users (never their keys).
    List {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        db: DbSettings,
    },
    /// Revoke a legacy user's key.
    Revoke {
        #[arg(long)]
        email: String,
        #[command(flatten)]
        db: DbSettings,
    },
}

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

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Key generation + CSR signing throughput, one core per thread.
    Keygen {
        /// `rsa2048`, `p256v1`, or `all`.
        #[arg(long, default_value = "all")]
        key_type: String,
        /// Seconds to run each key type.
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// Parallel threads.
        #[arg(long, default_value_t = 1)]
        threads: usize,
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
        /// The API base (a bare host gets `/client/v4`).
        #[arg(long, alias = "url", default_value = "http://127.0.0.1:8080")]
        base_url: String,
        /// A write token for the account or zone.
        #[arg(long, env = "CSRD_TOKEN", hide_env_values = true)]
        token: String,
        #[arg(long, conflicts_with = "zone", required_unless_present = "zone")]
        account: Option<String>,
        #[arg(long)]
        zone: Option<String>,
        /// `rsa2048`, `p256v1`, or a weighted mix such as `p256v1=3,rsa2048=1`.
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

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    // The operator commands record who ran them: a name that would forge lines in
    // `csrd audit` is refused before anything is done.
    if !matches!(
        cli.command,
        Command::Serve(_) | Command::Ingress(_) | Command::Worker(_) | Command::Migrate(_)
    ) {
        crate::audit::operator_name().map_err(anyhow::Error::msg)?;
    }
    match cli.command {
        Command::Serve(s) => serve(Role::Serve, s).await,
        Command::Ingress(s) => serve(Role::Ingress, s).await,
        Command::Worker(s) => serve(Role::Worker, s).await,
        Command::Migrate(db) => {
            let applied = startup::migrate(&db).await?;
            eprintln!(
                "migrations applied: {}",
                if applied.is_empty() {
                    "none (up to date)".into()
                } else {
                    applied.join(", ")
                }
            );
            Ok(())
        }
        Command::Token(TokenCommand::Create {
            scope,
            permission,
            name,
            expires_in_days,
            db,
        }) => {
            let scope = scope.parse()?;
            let permission =
                Permission::parse(&permission).context("permission must be read or write")?;
            if let Some(name) = &name {
                crate::auth::valid_label(name).map_err(|why| anyhow::anyhow!("--name {why}"))?;
            }
            let expires = expires_in_days
                .map(|d| {
                    chrono::Utc::now()
                        .checked_add_signed(chrono::Duration::days(i64::from(d)))
                        .context("--expires-in-days is too far in the future")
                })
                .transpose()?;
            let token = ApiToken::generate();
            let pool = build_pool(&db.database_url, 1, "csrd-cli")?;
            let client = pool.get().await.context("connecting to Postgres")?;
            let id = credentials::insert_token(
                &**client,
                &token,
                name.as_deref(),
                permission,
                &scope,
                expires,
            )
            .await?;
            operator_event(
                &**client,
                AuditEvent::new("token.create", "ok", Actor::operator())
                    .target(id)
                    .detail(serde_json::json!({
                        "name": name,
                        "permission": permission.as_str(),
                        "accounts": scope.accounts.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                        "zones": scope.zones.iter().map(|z| z.as_str()).collect::<Vec<_>>(),
                        "expires_at": expires,
                    })),
            )
            .await?;
            #[allow(
                clippy::disallowed_methods,
                reason = "the one time a token's secret is shown: to the operator who made it"
            )]
            let shown = token.reveal();
            println!("{shown}");
            Ok(())
        }
        Command::User(UserCommand::Create { email, scope, db }) => {
            let scope = scope.parse()?;
            if !crate::auth::valid_email(&email) {
                bail!("{:?} is not an email address", plain(&email));
            }
            let key = ApiKey::generate();
            let pool = build_pool(&db.database_url, 1, "csrd-cli")?;
            let client = pool.get().await.context("connecting to Postgres")?;
            let email = email.to_ascii_lowercase();
            credentials::upsert_user(&**client, &email, &key, &scope).await?;
            operator_event(
                &**client,
                AuditEvent::new("user.create", "ok", Actor::operator()).target(&email),
            )
            .await?;
            #[allow(
                clippy::disallowed_methods,
                reason = "the one time a legacy key is shown: to the operator who made it"
            )]
            let shown = key.reveal();
            println!("{shown}");
            Ok(())
        }
        Command::Token(TokenCommand::List { json, db }) => {
            let client = cli_client(&db).await?;
            print_credentials(&credentials::list_tokens(&**client).await?, json);
            Ok(())
        }
        Command::User(UserCommand::List { json, db }) => {
            let client = cli_client(&db).await?;
            print_credentials(&credentials::list_users(&**client).await?, json);
            Ok(())
        }
        Command::Token(TokenCommand::Revoke { id, db }) => {
            let client = cli_client(&db).await?;
            if !credentials::revoke_token(&**client, id).await? {
                bail!("no unrevoked token has id {id}");
            }
            operator_event(
                &**client,
                AuditEvent::new("token.revoke", "ok", Actor::operator()).target(id),
            )
            .await?;
            println!("revoked token {id}");
            Ok(())
        }
        Command::User(UserCommand::Revoke { email, db }) => {
            let client = cli_client(&db).await?;
            let email = email.to_ascii_lowercase();
            if !credentials::revoke_user(&**client, &email).await? {
                bail!("no unrevoked user has email {}", plain(&email));
            }
            operator_event(
                &**client,
                AuditEvent::new("user.revoke", "ok", Actor::operator()).target(&email),
            )
            .await?;
            println!("revoked user {}", plain(&email));
            Ok(())
        }
        Command::Kek(KekCommand::Status { keks, db }) => kek_status(keks, db).await,
        Command::Kek(KekCommand::Rewrap { keks, db }) => kek_rewrap(keks, db).await,
        Command::Kek(KekCommand::Generate { id }) => {
            let id = id.unwrap_or_else(|| format!("kek-{}", chrono::Utc::now().format("%Y%m%d")));
            let id = KekId::parse(&id).context("KEK ids are 1-64 of A-Z a-z 0-9 _ . -")?;
            println!("{}", Keyring::generate_entry(&id).as_str());
            Ok(())
        }
        Command::Keys(KeysCommand::Verify(args)) => keys_verify(args).await,
        Command::Audit(args) => audit(args).await,
        Command::Tenant(command) => tenant::run(command).await,
        Command::Bench(BenchCommand::Keygen {
            key_type,
            seconds,
            threads,
        }) => {
            let types = match key_type.as_str() {
                "all" => KeyType::ALL.to_vec(),
                k => vec![KeyType::parse(k).context("key type must be rsa2048, p256v1 or all")?],
            };
            crate::bench::keygen::keygen(&types, seconds, threads.max(1));
            Ok(())
        }
        Command::Batch(args) => {
            let summary = run_batch(args).await?;
            println!("{} created, {} failed", summary.created, summary.failed);
            if summary.failed > 0 {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Bench(BenchCommand::List { rows, samples, db }) => {
            crate::bench::list::run(&db.database_url, rows, samples).await
        }
        Command::Bench(BenchCommand::Create {
            base_url,
            token,
            account,
            zone,
            key_type,
            requests,
            concurrency,
            batch_size,
            json,
        }) => {
            let owner_path = match (account, zone) {
                (Some(a), _) => format!("accounts/{a}"),
                (None, Some(z)) => format!("zones/{z}"),
                (None, None) => bail!("give --account or --zone"),
            };
            crate::bench::load::run(crate::bench::load::LoadPlan {
                api: crate::client::Api::new(&base_url, token, owner_path)?,
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

async fn serve(role: Role, settings: Settings) -> anyhow::Result<()> {
    let running = startup::start(role, &settings, None).await?;
    let token = running.shutdown_token();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested; finishing in-flight work");
        token.cancel();
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn keys_verify(args: KeysVerifyArgs) -> anyhow::Result<()> {
    let owner = args.tenant.owner()?;
    let keyring = std::sync::Arc::new(crate::crypto::Keyring::from_secret(&args.keks)?);
    let pool = build_pool(&args.db.database_url, 2, "csrd-keys-verify")?;
    let plan = crate::custody::VerifyPlan {
        owner: owner.clone(),
        sample: args.sample.filter(|n| *n > 0),
    };
    let summary = crate::custody::verify_keys(&pool, keyring, plan, print_failure, |checked| {
        eprintln!("keys verify: {checked} checked")
    })
    .await?;
    let client = pool.get().await.context("connecting to Postgres")?;
    let mut event = AuditEvent::new(
        "keys.verify",
        if summary.failed == 0 { "ok" } else { "failed" },
        Actor::operator(),
    )
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

async fn kek_rewrap(keks: SecretString, db: DbSettings) -> anyhow::Result<()> {
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
        let note = if id == keyring.active().id().as_str() {
            " (active)"
        } else if records > 0 {
            " (still needed: do not remove this KEK yet)"
        } else {
            ""
        };
        eprintln!("  {id}\t{records}{note}");
    }
    operator_event(
        &**client,
        AuditEvent::new(
            "kek.rewrap",
            if summary.failed == 0 { "ok" } else { "failed" },
            Actor::operator(),
        )
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

async fn audit(args: AuditArgs) -> anyhow::Result<()> {
    let owner = args.tenant.owner()?;
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let filter = crate::db::audit::AuditFilter {
        owner,
        since,
        action: args.action,
        limit: args.limit.max(1),
    };
    let client = cli_client(&args.db).await?;
    for r in crate::db::audit::read(&**client, &filter).await? {
        if args.json {
            println!("{}", serde_json::to_string(&r)?);
            continue;
        }
        let owner = match (&r.owner_kind, &r.owner_id) {
            (Some(k), Some(id)) => format!("{k}:{id}"),
            _ => "-".into(),
        };
        let dash = |v: &Option<String>| plain(v.as_deref().unwrap_or("-")).into_owned();
        println!(
            "{}\t{}\t{}\t{}:{}\t{}\t{}\t{}\trequest={}\ttrace={}{}",
            r.at.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
            plain(&r.action),
            plain(&r.outcome),
            plain(&r.actor_kind),
            dash(&r.actor),
            plain(&owner),
            dash(&r.target),
            dash(&r.remote_addr),
            dash(&r.request_id),
            dash(&r.trace_id),
            // JSON text: its strings' control characters are already escaped.
            r.detail.map(|d| format!("\t{d}")).unwrap_or_default()
        );
    }
    Ok(())
}

/// `--since`: an RFC 3339 time, or an age such as `15m`.
fn parse_since(s: &str) -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
    if let Ok(at) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(at.with_timezone(&chrono::Utc));
    }
    let (number, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = number
        .parse()
        .with_context(|| format!("--since {s:?}: an RFC 3339 time or an age like 15m"))?;
    let age = match unit {
        "s" => chrono::Duration::seconds(n),
        "m" => chrono::Duration::minutes(n),
        "h" => chrono::Duration::hours(n),
        "d" => chrono::Duration::days(n),
        _ => bail!("--since {s:?}: the unit must be s, m, h or d"),
    };
    Ok(chrono::Utc::now() - age)
}

/// One record `keys verify` or `kek rewrap` could not handle: which, and why (never key bytes).
fn print_failure(f: &crate::custody::Failure) {
    eprintln!(
        "FAILED {} ({} {}): {}",
        f.id.0,
        f.owner.kind().as_str(),
        f.owner.id(),
        f.reason
    );
}

/// Appends one operator event to the audit log.
async fn operator_event(
    client: &impl tokio_postgres::GenericClient,
    event: AuditEvent,
) -> anyhow::Result<()> {
    crate::audit::append(client, &[event])
        .await
        .context("writing the audit log")?;
    Ok(())
}

async fn cli_client(db: &DbSettings) -> anyhow::Result<deadpool_postgres::Object> {
    let pool = build_pool(&db.database_url, 1, "csrd-cli")?;
    pool.get().await.context("connecting to Postgres")
}

fn print_credentials(listing: &[credentials::CredentialListing], json: bool) {
    for c in listing {
        if json {
            println!("{}", serde_json::to_string(c).unwrap_or_default());
            continue;
        }
        let status = match (&c.revoked_at, &c.expires_at) {
            (Some(at), _) => format!("revoked {}", at.format("%Y-%m-%d %H:%M")),
            (None, Some(at)) if *at <= chrono::Utc::now() => {
                format!("expired {}", at.format("%Y-%m-%d"))
            }
            (None, Some(at)) => format!("expires {}", at.format("%Y-%m-%d")),
            (None, None) => "active".into(),
        };
        println!(
            "{}\t{}\t{}\t{}\taccounts={}\tzones={}\tcreated {}\t{}",
            plain(&c.id),
            plain(c.lookup_id.as_deref().unwrap_or("-")),
            plain(c.name.as_deref().unwrap_or("-")),
            c.permission,
            c.accounts.join(","),
            c.zones.join(","),
            c.created_at.format("%Y-%m-%d %H:%M"),
            status
        );
    }
}

async fn kek_status(keks: Option<SecretString>, db: DbSettings) -> anyhow::Result<()> {
    let keyring = keks.as_ref().map(Keyring::from_secret).transpose()?;
    let client = cli_client(&db).await?;
    if let Some(keyring) = &keyring {
        crate::db::keks::verify_known_keks(&client, keyring).await?;
    }
    let wraps: std::collections::HashMap<String, i64> =
        crate::db::keks::wraps(&client).await?.into_iter().collect();
    let mut seen = std::collections::BTreeSet::new();
    for (id, records, checked) in crate::db::keks::usage(&client).await? {
        let role = match &keyring {
            None => "",
            Some(k) if k.active().id().as_str() == id => "active (encrypts new records)",
            Some(k) if k.get(&id).is_some() => "configured (decrypts)",
            Some(_) if records == 0 => "not configured, wraps nothing: retired",
            Some(_) => "NOT CONFIGURED: its records cannot be opened",
        };
        let check = if checked {
            "check value stored"
        } else {
            "no check value"
        };
        println!("{id}\t{records} records\t{check}\t{role}");
        let used = wraps.get(&id).copied().unwrap_or(0);
        let (share, rotate) = crate::custody::nonce_budget(used);
        println!(
            "{id}\tnonce budget: {used} wraps, {:.4}% of 2^32{}",
            share * 100.0,
            if rotate {
                " - ROTATE: add a new KEK, promote it, rewrap"
            } else {
                ""
            }
        );
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
