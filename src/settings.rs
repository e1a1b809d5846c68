//! Runtime settings, from flags or the environment. The variable names are contracts (README,
//! "Configuration"): the compose file and operators' scripts set them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use crate::amqp::QueueLimits;
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

#[derive(Debug, Clone, Args)]
pub struct Settings {
    #[command(flatten)]
    pub db: DbSettings,
    /// RabbitMQ connection URL.
    #[arg(long, env = "AMQP_URL", default_value = DEFAULT_AMQP_URL)]
    pub amqp_url: String,
    /// Prefix of every exchange and queue name.
    #[arg(long, env = "CSRD_AMQP_PREFIX", default_value = "csrd")]
    pub amqp_prefix: String,
    /// HTTP listen address (ingress).
    #[arg(long, env = "CSRD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin listen address (`/metrics`, `/healthz`), in every role; loopback by default so
    /// the figures it shows stay off the public network.
    #[arg(long, env = "CSRD_ADMIN_LISTEN", default_value = "127.0.0.1:9090")]
    pub admin_listen: SocketAddr,
    /// Key-encryption keys: `id:base64key[,id:base64key...]`; the first encrypts.
    #[arg(long, env = "CSRD_KEKS", hide_env_values = true)]
    pub keks: Option<String>,
    /// Where `csrd serve` keeps a development KEK when CSRD_KEKS is unset.
    #[arg(long, env = "CSRD_DEV_KEK_FILE", default_value = ".csrd/dev-kek")]
    pub dev_kek_file: PathBuf,
    /// Concurrent key generations per worker process (default: number of cores).
    #[arg(long, env = "CSRD_WORKERS")]
    pub workers: Option<usize>,
    /// SAN rules: `permissive` (syntax only) or `cloudflare` (adds 1414/1415/1416).
    #[arg(long, env = "CSRD_NAME_POLICY", default_value = "permissive", value_parser = parse_name_policy)]
    pub name_policy: NamePolicy,
    /// How long a create waits for its CSR before answering 202 (seconds).
    #[arg(long, env = "CSRD_CREATE_WAIT_SECS", default_value_t = 30)]
    pub create_wait_secs: u64,
    /// Deliveries of one job before it is dead-lettered.
    #[arg(long, env = "CSRD_DELIVERY_LIMIT", default_value_t = 5)]
    pub delivery_limit: i64,
    /// How long Idempotency-Key records are kept (hours).
    #[arg(long, env = "CSRD_IDEMPOTENCY_TTL_HOURS", default_value_t = 24)]
    pub idempotency_ttl_hours: u32,
    /// Chunks the jobs queue holds before creates are refused with 503.
    #[arg(long, env = "CSRD_QUEUE_MAX_LENGTH", default_value_t = 200_000)]
    pub queue_max_length: i64,
    /// Concurrent single creates coalesced into one chunk, at most (1 disables coalescing).
    #[arg(long, env = "CSRD_CHUNK_MAX_ITEMS", default_value_t = 256)]
    pub chunk_max_items: usize,
    /// How long a chunk of single creates waits for more after its first (microseconds).
    #[arg(long, env = "CSRD_CHUNK_LINGER_US", default_value_t = 1000)]
    pub chunk_linger_us: u64,
    /// Serve the batch API (`…/custom_csrs/batches`); `false` makes its routes answer 404, as
    /// Cloudflare's own API does.
    #[arg(long, env = "CSRD_BATCH_API", default_value_t = true, action = clap::ArgAction::Set)]
    pub batch_api: bool,
    /// Weight of one batch chunk: P-256 items per chunk (an RSA item counts 16).
    #[arg(long, env = "CSRD_BATCH_CHUNK_ITEMS", default_value_t = 512)]
    pub batch_chunk_items: usize,
    /// Chunks a worker process holds unacknowledged (the prefetch): enough to keep the
    /// database and the keygen slots busy while others are being written or announced.
    #[arg(long, env = "CSRD_WORKER_PREFETCH", default_value_t = 8)]
    pub worker_prefetch: u16,
    /// RSA-2048 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_RSA2048", default_value_t = 32)]
    pub key_pool_rsa2048: usize,
    /// P-256 keys each worker keeps generated ahead of time (0 disables the pool).
    #[arg(long, env = "CSRD_KEY_POOL_P256", default_value_t = 1024)]
    pub key_pool_p256: usize,
    /// How long a verified credential is trusted without asking Postgres again (milliseconds,
    /// at most 5000; 0 disables the cache). A revoked token stops working within this time.
    #[arg(long, env = "CSRD_CREDENTIAL_CACHE_MS", default_value_t = 5000, value_parser = clap::value_parser!(u64).range(0..=5000))]
    pub credential_cache_ms: u64,
}

fn parse_name_policy(s: &str) -> Result<NamePolicy, String> {
    NamePolicy::parse(s)
        .ok_or_else(|| format!("unknown name policy {s:?}: use permissive or cloudflare"))
}

impl Settings {
    pub fn workers(&self) -> usize {
        self.workers
            .filter(|n| *n > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
    }

    pub fn create_wait(&self) -> Duration {
        Duration::from_secs(self.create_wait_secs)
    }

    pub fn chunks(&self) -> crate::ingress::ChunkSettings {
        crate::ingress::ChunkSettings {
            max_items: self.chunk_max_items.max(1),
            linger: Duration::from_micros(self.chunk_linger_us),
            ..Default::default()
        }
    }

    pub fn key_pool(&self) -> crate::worker::KeyPoolSizes {
        crate::worker::KeyPoolSizes {
            rsa2048: self.key_pool_rsa2048,
            p256: self.key_pool_p256,
        }
    }

    pub fn credential_cache(&self) -> Duration {
        Duration::from_millis(self.credential_cache_ms.min(5000))
    }

    pub fn queue_limits(&self) -> QueueLimits {
        QueueLimits {
            delivery_limit: self.delivery_limit,
            max_length: self.queue_max_length,
        }
    }

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
