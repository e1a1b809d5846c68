//! Runtime settings, from flags or the environment. The variable names are contracts
//! (docs/operations.md, "Configuration"): the compose file and operators' scripts set them. This is
//! the one place the service reads its environment (`csrd batch`, a client, reads its token
//! variables itself).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use secrecy::SecretString;

use crate::domain::NamePolicy;

pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
pub const DEFAULT_AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

#[derive(Debug, Clone, Args)]
pub struct DbSettings {
    /// Postgres connection URL.
    #[arg(long, env = "DATABASE_URL", default_value = DEFAULT_DATABASE_URL)]
    pub database_url: String,
    /// Maximum pooled Postgres connections per process.
    #[arg(long, env = "CSRD_DB_POOL_SIZE", default_value_t = 16)]
    pub db_pool_size: usize,
}

/// Every setting of a process, in one group per role or adapter. Each group is plain data;
/// the layer it configures converts it into its own types (`HttpLimits::from(&HttpSettings)`
/// in `http`, `TenantLimits::from(&TenantSettings)` in `ingress`, and so on), so this module
/// depends on none of them.
#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub db: DbSettings,
    #[command(flatten)]
    pub broker: BrokerSettings,
    #[command(flatten)]
    pub keys: KeySettings,
    #[command(flatten)]
    pub http: HttpSettings,
    #[command(flatten)]
    pub ingress: IngressSettings,
    #[command(flatten)]
    pub worker: WorkerSettings,
    #[command(flatten)]
    pub tenants: TenantSettings,
}

/// RabbitMQ: where it is, the names, and the queues' limits.
#[derive(Debug, Clone, Args)]
pub struct BrokerSettings {
    /// RabbitMQ connection URL, or several (comma-separated): the nodes of one cluster,
    /// tried in turn.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// The cluster's node URLs, comma-separated; when set, used instead of AMQP_URL.
    #[arg(long, env = "CSRD_AMQP_URLS")]
    pub amqp_urls: Option<String>,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "CSRD_AMQP_PREFIX", default_value = "csrd")]
    pub amqp_prefix: String,
    /// Deliveries of one job before it is dead-lettered.
    #[arg(long, env = "CSRD_DELIVERY_LIMIT", default_value_t = 5)]
    pub delivery_limit: i64,
    /// Chunks the jobs queue holds before creates are refused with 503.
    #[arg(long, env = "CSRD_QUEUE_MAX_LENGTH", default_value_t = 200_000)]
    pub queue_max_length: i64,
}

/// The keys that protect the private keys.
#[derive(Debug, Clone, Args)]
pub struct KeySettings {
    /// Key-encryption keys: `id:base64key[,id:base64key...]`; the first encrypts.
    #[arg(long, env = "CSRD_KEKS", hide_env_values = true, value_parser = secret)]
    pub keks: Option<SecretString>,
    /// Where `csrd serve` keeps a development KEK when CSRD_KEKS is unset.
    #[arg(long, env = "CSRD_DEV_KEK_FILE", default_value = ".csrd/dev-kek")]
    pub dev_kek_file: PathBuf,
}

/// The ingress role: what a request may be, and how creates and batches are handled.
#[derive(Debug, Clone, Args)]
pub struct IngressSettings {
    /// SAN rules: `permissive` (syntax only) or `cloudflare` (adds 1414/1415/1416).
    #[arg(long, env = "CSRD_NAME_POLICY", default_value = "permissive", value_parser = parse_name_policy)]
    pub name_policy: NamePolicy,
    /// How long a create waits for its CSR before answering 202 (seconds).
    #[arg(long, env = "CSRD_CREATE_WAIT_SECS", default_value_t = 30)]
    pub create_wait_secs: u64,
    /// Concurrent single creates coalesced into one chunk, at most (1 disables coalescing).
    #[arg(long, env = "CSRD_CHUNK_MAX_ITEMS", default_value_t = 256)]
    pub chunk_max_items: usize,
    /// How long a chunk of single creates waits for more after its first (microseconds), while
    /// another chunk waits for its confirm; with none in flight a chunk goes at once.
    #[arg(long, env = "CSRD_CHUNK_LINGER_US", default_value_t = 1000)]
    pub chunk_linger_us: u64,
    /// Serve the batch API (`…/custom_csrs/batches`); `false` makes its routes answer 404, as
    /// Cloudflare's own API does.
    #[arg(long, env = "CSRD_BATCH_API", default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_api: bool,
    /// Cost units of one batch chunk at most: P-256 items per chunk (an RSA-2048 item counts
    /// 256).
    #[arg(long, env = "CSRD_BATCH_CHUNK_ITEMS", default_value_t = 512)]
    pub batch_chunk_items: usize,
    /// How long a verified credential is trusted without asking Postgres again (milliseconds,
    /// at most 5000; 0 disables the cache). A revoked token stops working within this time.
    #[arg(long, env = "CSRD_CREDENTIAL_CACHE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=5000))]
    pub credential_cache_ms: u64,
}

/// The worker role: how many keys at once, what it holds, and its housekeeping.
#[derive(Debug, Clone, Args)]
pub struct WorkerSettings {
    /// Concurrent key generations per worker process (default: number of cores).
    #[arg(long, env = "CSRD_WORKERS")]
    pub workers: Option<usize>,
    /// Chunks of single creates a worker process holds unacknowledged (the prefetch): enough
    /// to keep the keygen slots busy while others are written or announced, and to hold what
    /// an ingress window lets into the queue, so the worker's fair scheduler sees every
    /// tenant's waiting creates.
    #[arg(long, env = "CSRD_WORKER_PREFETCH", default_value_t = 32)]
    pub worker_prefetch: u16,
    /// Batch messages a worker process holds unacknowledged (default: CSRD_WORKERS + 2, at
    /// least 4). Few: the bulk lane is kept short so that batches of different tenants
    /// interleave, and a stopping worker hands them back; enough to keep every keygen slot busy
    /// (a message of RSA-2048 items holds 2 keys) with room for a second tenant's chunks beside
    /// a first tenant's that progress slowly.
    #[arg(long, env = "CSRD_WORKER_BULK_PREFETCH")]
    pub worker_bulk_prefetch: Option<u16>,
    /// RSA-2048 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_RSA2048", default_value_t = 32)]
    pub key_pool_rsa2048: usize,
    /// P-256 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_P256", default_value_t = 1024)]
    pub key_pool_p256: usize,
    /// RSA-3072 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_RSA3072", default_value_t = 16)]
    pub key_pool_rsa3072: usize,
    /// RSA-4096 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_RSA4096", default_value_t = 8)]
    pub key_pool_rsa4096: usize,
    /// P-384 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_P384", default_value_t = 256)]
    pub key_pool_p384: usize,
    /// How long Idempotency-Key records are kept (hours).
    #[arg(long, env = "CSRD_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u32,
}

/// Per-tenant limits (docs/operations.md, "Limits and abuse", gives each default's reason).
#[derive(Debug, Clone, Args)]
pub struct TenantSettings {
    /// Requests per second per account or zone, across every ingress (a batch counts one per
    /// MiB of body); 0 disables.
    #[arg(long, env = "CSRD_TENANT_RATE", default_value_t = 10_000.0)]
    pub tenant_rate: f64,
    /// Requests a tenant may send at once after a quiet spell.
    #[arg(long, env = "CSRD_TENANT_BURST", default_value_t = 20_000.0)]
    pub tenant_burst: f64,
    /// Single creates per tenant open at once on one ingress; 0 disables.
    #[arg(long, env = "CSRD_TENANT_MAX_IN_FLIGHT", default_value_t = 1000)]
    pub tenant_max_in_flight: usize,
    /// Items per tenant accepted and not yet settled (batch items), at most; 0 disables.
    #[arg(long, env = "CSRD_TENANT_MAX_OUTSTANDING", default_value_t = 1_000_000)]
    pub tenant_max_outstanding: i64,
    /// Cost units of single creates queued or being made from one ingress (P-256 costs 1,
    /// RSA-2048 256), handed out by fair share between tenants.
    #[arg(long, env = "CSRD_INGRESS_WINDOW", default_value_t = 4096)]
    pub ingress_window: u32,
    /// Reads of batch results per tenant open at once on one ingress; 0 disables.
    #[arg(long, env = "CSRD_TENANT_MAX_READS", default_value_t = 8)]
    pub tenant_max_reads: usize,
    /// Failed authentications per credential per minute before 429; 0 disables.
    #[arg(long, env = "CSRD_AUTH_FAILURES_PER_MIN", default_value_t = 60)]
    pub auth_failures_per_min: u32,
    /// Failed authentications per client address (IPv6: per /64) per minute, whatever the
    /// credential, before 429; 0 disables.
    #[arg(
        long,
        env = "CSRD_AUTH_FAILURES_PER_ADDR_PER_MIN",
        default_value_t = 300
    )]
    pub auth_failures_per_addr_per_min: u32,
    /// MiB that large request bodies (batches, bulk certificate uploads) may hold at once in
    /// one process, reserved as they arrive (three times the body).
    #[arg(long, env = "CSRD_BATCH_MEMORY_MIB", default_value_t = 256)]
    pub batch_memory_mib: u64,
    /// MiB that single requests' bodies (creates, certificate uploads) being read may hold at
    /// once in one process, reserved as they arrive.
    #[arg(long, env = "CSRD_BODY_MEMORY_MIB", default_value_t = 64)]
    pub body_memory_mib: u64,
    /// Custom certificates one custom CSR may hold (renewals of its key over the years).
    #[arg(long, env = "CSRD_TENANT_CERTIFICATES_PER_CSR", default_value_t = 100)]
    pub tenant_certificates_per_csr: i64,
    /// Bytes of custom certificates (chains, hosts, policies) one tenant may store.
    #[arg(long, env = "CSRD_TENANT_CERTIFICATE_BYTES", default_value_t = 4 * 1024 * 1024 * 1024)]
    pub tenant_certificate_bytes: i64,
}

/// The listeners, and the public one's connection limits (docs/operations.md, "Limits and abuse").
#[derive(Debug, Clone, Args)]
pub struct HttpSettings {
    /// HTTP listen address (ingress).
    #[arg(long, env = "CSRD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listen address (`/metrics`, `/healthz`), in every role; loopback by default so
    /// the figures it shows stay off the public network.
    #[arg(long, env = "CSRD_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Open connections at most (lowered to fit the descriptor limit). At the cap the oldest
    /// connection without a request in progress is closed to make room.
    #[arg(long, env = "CSRD_HTTP_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub http_max_connections: usize,
    /// A connection with no request in progress is closed after this long (milliseconds).
    #[arg(long, env = "CSRD_HTTP_IDLE_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_idle_timeout_ms: u64,
    /// A request head must arrive within this long of its first byte (milliseconds), else 408.
    #[arg(long, env = "CSRD_HTTP_HEADER_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_header_timeout_ms: u64,
    /// A request body must arrive within this long of its head (milliseconds), else 408.
    #[arg(long, env = "CSRD_HTTP_BODY_TIMEOUT_MS", default_value_t = 30_000)]
    pub http_body_timeout_ms: u64,
    /// A request not answered within this long gets 503 (milliseconds); longer than
    /// CSRD_CREATE_WAIT_SECS, after which a create answers 202 anyway.
    #[arg(long, env = "CSRD_HTTP_REQUEST_TIMEOUT_MS", default_value_t = 60_000)]
    pub http_request_timeout_ms: u64,
    /// A response the client stops reading is abandoned, and its connection closed, once no
    /// byte of it could be written for this long (milliseconds). A slow reader that makes
    /// progress is never cut.
    #[arg(long, env = "CSRD_HTTP_WRITE_TIMEOUT_MS", default_value_t = 10_000)]
    pub http_write_timeout_ms: u64,
    /// Bytes of one request head (request line and headers) at most, else 431 (or 414).
    #[arg(long, env = "CSRD_HTTP_MAX_HEAD_BYTES", default_value_t = 32 * 1024)]
    pub http_max_head_bytes: usize,
    /// Headers in one request at most, else 431.
    #[arg(long, env = "CSRD_HTTP_MAX_HEADERS", default_value_t = 100)]
    pub http_max_headers: usize,
}

fn parse_name_policy(s: &str) -> Result<NamePolicy, String> {
    NamePolicy::parse(s)
        .ok_or_else(|| format!("unknown name policy {s:?}: use permissive or cloudflare"))
}

impl WorkerSettings {
    pub fn workers(&self) -> usize {
        self.workers
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    pub fn worker_bulk_prefetch(&self) -> u16 {
        self.worker_bulk_prefetch
            .filter(|n| *n > 0)
            .unwrap_or_else(|| {
                u16::try_from(self.workers())
                    .unwrap_or(u16::MAX)
                    .max(2)
                    .saturating_add(2)
            })
    }
}

impl IngressSettings {
    pub fn create_wait(&self) -> Duration {
        Duration::from_secs(self.create_wait_secs)
    }

    pub fn credential_cache(&self) -> Duration {
        Duration::from_millis(self.credential_cache_ms.min(5000))
    }
}

impl BrokerSettings {
    /// The broker URLs to try, in order: `CSRD_AMQP_URLS`, else `AMQP_URL`, split on commas.
    pub fn broker_urls(&self) -> Vec<String> {
        let list = self.amqp_urls.as_deref().unwrap_or(&self.amqp_url);
        list.split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Settings {
    /// Defaults for everything, as if no flag or variable were set (tests start from this).
    pub fn defaults() -> Self {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            s: Settings,
        }
        Only::parse_from(["csrd"]).s
    }
}

/// Logs and traces: every command's, read from the environment before the command line is
/// (no flags: a log line about a bad flag is logged as these say).
#[derive(Debug, Clone, Default)]
pub struct TelemetrySettings {
    /// `OTEL_EXPORTER_OTLP_ENDPOINT`: spans are exported over OTLP/HTTP only when it is set.
    /// The OpenTelemetry SDK reads it (and its other `OTEL_*` variables) itself.
    pub otlp_endpoint: Option<String>,
    /// `CSRD_LOG_FORMAT`: `json` for one JSON object per line; anything else is text.
    pub log_format: Option<String>,
    /// `RUST_LOG`: which log lines are written (tracing's filter syntax), `info` by default.
    pub log_filter: Option<String>,
}

impl TelemetrySettings {
    pub fn from_env() -> Self {
        Self {
            otlp_endpoint: non_empty_env("OTEL_EXPORTER_OTLP_ENDPOINT"),
            log_format: std::env::var("CSRD_LOG_FORMAT").ok(),
            log_filter: std::env::var("RUST_LOG").ok(),
        }
    }

    pub fn json_logs(&self) -> bool {
        self.log_format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("json"))
    }

    pub fn exporting(&self) -> bool {
        self.otlp_endpoint.is_some()
    }
}

/// Who runs a command, for the audit log: `CSRD_OPERATOR`, else the login (`SUDO_USER`,
/// `USER`, `LOGNAME`, the first one set), else `unknown`.
#[derive(Debug, Clone, Default)]
pub struct OperatorSettings {
    pub operator: Option<String>,
    pub login: Option<String>,
}

impl OperatorSettings {
    pub fn from_env() -> Self {
        Self {
            operator: non_empty_env("CSRD_OPERATOR"),
            login: login_from_env(),
        }
    }

    /// The operator's name as given; `audit::operator_name` checks it.
    pub fn name(&self) -> &str {
        [&self.operator, &self.login]
            .into_iter()
            .flatten()
            .find(|v| !v.is_empty())
            .map_or("unknown", String::as_str)
    }
}

fn login_from_env() -> Option<String> {
    ["SUDO_USER", "USER", "LOGNAME"]
        .into_iter()
        .find_map(non_empty_env)
}

fn non_empty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// A secret setting (`CSRD_KEKS`): zeroized when dropped, `[REDACTED]` when debug-printed, and
/// `expose_secret()` at the one place that needs it.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_printing_the_settings_never_shows_the_keks() {
        use clap::Parser;
        #[derive(Parser)]
        struct Only {
            #[command(flatten)]
            s: Settings,
        }
        let kek = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
        let settings = Only::parse_from(["csrd", "--keks", kek]).s;
        let shown = format!("{settings:?}");
        assert_eq!(settings.broker.broker_urls(), [DEFAULT_AMQP_URL]);
        assert!(!shown.contains("AAECAwQF"), "{shown}");
        assert!(shown.contains("REDACTED"), "{shown}");
    }
}

#[cfg(test)]
mod broker_urls {
    use super::*;

    #[test]
    fn several_urls_come_from_amqp_url_or_csrd_amqp_urls() {
        let mut s = Settings::defaults().broker;
        s.amqp_url = "amqp://a:5672/%2f, amqp://b:5672/%2f,".into();
        assert_eq!(s.broker_urls(), ["amqp://a:5672/%2f", "amqp://b:5672/%2f"]);
        s.amqp_urls = Some("amqp://c/%2f,amqp://d/%2f,amqp://e/%2f".into());
        assert_eq!(s.broker_urls().len(), 3);
        assert_eq!(s.broker_urls()[0], "amqp://c/%2f");
    }
}

#[cfg(test)]
mod from_the_environment {
    use super::*;

    #[test]
    fn the_operator_is_the_first_name_given_and_empty_ones_are_passed_over() {
        let named = |operator: Option<&str>, login: Option<&str>| OperatorSettings {
            operator: operator.map(str::to_owned),
            login: login.map(str::to_owned),
        };
        assert_eq!(named(Some("ops"), Some("root")).name(), "ops");
        assert_eq!(named(Some(""), Some("root")).name(), "root");
        assert_eq!(named(None, None).name(), "unknown");
    }

    #[test]
    fn only_json_means_json_logs() {
        let format = |f: Option<&str>| TelemetrySettings {
            log_format: f.map(str::to_owned),
            ..TelemetrySettings::default()
        };
        assert!(format(Some("JSON")).json_logs());
        assert!(!format(Some("text")).json_logs());
        assert!(!format(Some("")).json_logs());
        assert!(!format(None).json_logs());
    }
}
