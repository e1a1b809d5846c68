//! Test harness: each `TestApp` runs the real service on port 0 against real Postgres and
//! RabbitMQ, with its own database and its own AMQP prefix, and removes both when dropped.

use std::net::SocketAddr;

use csrd::amqp::{QueueLimits, Topology};
use csrd::auth::{ApiKey, ApiToken, Permission, Scope};
use csrd::crypto::{KekId, Keyring};
use csrd::db::{Pool, build_pool, credentials};
use csrd::domain::{AccountId, ZoneId};
use csrd::settings::Settings;
use csrd::startup::{self, Role, Running};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const ACCOUNT_A: &str = "023e105f4ecef8ad9ca31a8372d0c353";
pub const ACCOUNT_B: &str = "b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0";
pub const ZONE_A: &str = "9a7806061c88ada191ed06f989cc3dac";

pub fn admin_url() -> String {
    std::env::var("CSRD_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn amqp_url() -> String {
    std::env::var("CSRD_TEST_AMQP_URL").unwrap_or_else(|_| csrd::settings::DEFAULT_AMQP_URL.into())
}

/// A database and an AMQP prefix of one test's own, removed on drop.
pub struct Isolation {
    pub db_name: String,
    pub database_url: String,
    pub prefix: String,
    pub keks: String,
}

impl Isolation {
    pub async fn new() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let db_name = format!("csrd_test_{suffix}");
        let admin = build_pool(&admin_url(), 1, "csrd-tests").unwrap();
        admin
            .get()
            .await
            .expect("Postgres must be running for the integration tests (see scripts/test)")
            .batch_execute(&format!("CREATE DATABASE {db_name}"))
            .await
            .unwrap();
        let base = admin_url();
        let database_url = match base.rsplit_once('/') {
            Some((head, _)) => format!("{head}/{db_name}"),
            None => panic!("CSRD_TEST_DATABASE_URL must end in /dbname"),
        };
        let keks = Keyring::generate_entry(&KekId::parse("test-kek").unwrap()).to_string();
        Self {
            db_name,
            database_url,
            prefix: format!("csrdtest-{suffix}"),
            keks,
        }
    }

    pub fn settings(&self) -> Settings {
        let mut s = Settings::defaults();
        s.db.database_url = self.database_url.clone();
        s.db.db_pool_size = 8;
        s.amqp_url = amqp_url();
        s.amqp_prefix = self.prefix.clone();
        s.keks = Some(self.keks.clone());
        s.workers = Some(2);
        s.listen = "127.0.0.1:0".parse().unwrap();
        s
    }

    /// Environment for a `csrd` child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.database_url.clone()),
            ("AMQP_URL", amqp_url()),
            ("CSRD_AMQP_PREFIX", self.prefix.clone()),
            ("CSRD_KEKS", self.keks.clone()),
            ("CSRD_WORKERS", "2".into()),
            ("RUST_LOG", "warn".into()),
        ]
    }
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let db_name = self.db_name.clone();
        let prefix = self.prefix.clone();
        // Drop cannot await; clean up on a thread with its own runtime.
        let cleanup = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                if let Ok(conn) = csrd::amqp::connect(&amqp_url(), "csrd-tests-cleanup").await {
                    if let Ok(ch) = conn.create_channel().await {
                        let topology = Topology::new(&prefix, QueueLimits::default());
                        if let Err(e) = topology.delete_all(&ch).await {
                            eprintln!("warning: could not delete AMQP topology {prefix}: {e}");
                        }
                    }
                    let _ = conn.close(200, "cleanup".into()).await;
                }
                let admin = build_pool(&admin_url(), 1, "csrd-tests").unwrap();
                if let Ok(client) = admin.get().await {
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: Pool,
    pub http: reqwest::Client,
    pub keyring: Keyring,
    pub settings: Settings,
    shutdown: Option<CancellationToken>,
    // Declared last: dropped after the app is told to stop.
    pub iso: Isolation,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_role(Role::Serve, configure).await
}

/// Starts one role (`Serve`, or `Ingress` alone so that jobs wait in the queue).
pub async fn spawn_role(role: Role, configure: impl FnOnce(&mut Settings)) -> TestApp {
    // Logs (RUST_LOG) and W3C trace context, as the binary has them.
    csrd::telemetry::init();
    let iso = Isolation::new().await;
    if role != Role::Serve {
        startup::migrate(&iso.settings().db).await.unwrap();
    }
    let mut settings = iso.settings();
    configure(&mut settings);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let running: Running = startup::start(role, &settings, Some(listener))
        .await
        .expect("csrd starts");
    let addr = running.http_addr.unwrap();
    let shutdown = running.shutdown_token();
    tokio::spawn(running.wait());
    TestApp {
        addr,
        pool: build_pool(&iso.database_url, 2, "csrd-tests").unwrap(),
        http: reqwest::Client::new(),
        keyring: Keyring::parse(&iso.keks).unwrap(),
        settings,
        shutdown: Some(shutdown),
        iso,
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.shutdown.take() {
            s.cancel();
        }
    }
}

pub fn scope(accounts: &[&str], zones: &[&str]) -> Scope {
    Scope {
        accounts: accounts
            .iter()
            .map(|a| AccountId::parse(a).unwrap())
            .collect(),
        zones: zones.iter().map(|z| ZoneId::parse(z).unwrap()).collect(),
    }
}

pub struct Response {
    pub status: u16,
    pub body: Value,
}

impl Response {
    pub fn codes(&self) -> Vec<u64> {
        self.body["errors"]
            .as_array()
            .map(|errs| errs.iter().filter_map(|e| e["code"].as_u64()).collect())
            .unwrap_or_default()
    }

    /// Asserts the Cloudflare failure envelope with this status and first error code.
    #[track_caller]
    pub fn assert_failure(&self, status: u16, code: u64) {
        assert_eq!(self.status, status, "body: {}", self.body);
        assert_eq!(self.body["success"], json!(false), "body: {}", self.body);
        assert_eq!(self.body["result"], Value::Null);
        assert_eq!(self.body["messages"], json!([]));
        assert_eq!(
            self.codes().first().copied(),
            Some(code),
            "body: {}",
            self.body
        );
    }
}

pub enum Auth<'a> {
    None,
    Bearer(&'a str),
    Legacy(&'a str, &'a str),
    Header(&'a str, &'a str),
}

impl TestApp {
    /// Starts a worker process-equivalent (in this process) against the same database and prefix.
    pub async fn start_worker(&self) -> Running {
        startup::start(Role::Worker, &self.settings, None)
            .await
            .expect("worker starts")
    }

    pub async fn amqp_channel(&self) -> (lapin::Connection, lapin::Channel) {
        let conn = csrd::amqp::connect(&amqp_url(), "csrd-tests")
            .await
            .unwrap();
        let ch = conn.create_channel().await.unwrap();
        (conn, ch)
    }

    pub fn topology(&self) -> Topology {
        Topology::new(&self.iso.prefix, QueueLimits::default())
    }

    pub async fn row_count(&self) -> i64 {
        let client = self.pool.get().await.unwrap();
        client
            .query_one("SELECT count(*) FROM custom_csrs", &[])
            .await
            .unwrap()
            .get(0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn token(&self, accounts: &[&str], zones: &[&str], permission: Permission) -> String {
        let token = ApiToken::generate();
        let client = self.pool.get().await.unwrap();
        credentials::insert_token(
            &**client,
            &token,
            Some("test"),
            permission,
            &scope(accounts, zones),
            None,
        )
        .await
        .unwrap();
        token.reveal().to_owned()
    }

    pub async fn legacy_key(&self, email: &str, accounts: &[&str], zones: &[&str]) -> String {
        let key = ApiKey::generate();
        let client = self.pool.get().await.unwrap();
        credentials::upsert_user(&**client, email, &key, &scope(accounts, zones))
            .await
            .unwrap();
        key.reveal().to_owned()
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<String>,
    ) -> Response {
        let mut req = self.http.request(method, self.url(path));
        req = match auth {
            Auth::None => req,
            Auth::Bearer(t) => req.bearer_auth(t),
            Auth::Legacy(email, key) => req.header("X-Auth-Email", email).header("X-Auth-Key", key),
            Auth::Header(name, value) => req.header(name, value),
        };
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let resp = req.send().await.expect("request reaches csrd");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        Response { status, body }
    }

    pub async fn create(&self, kind: &str, owner: &str, auth: Auth<'_>, body: &Value) -> Response {
        self.send(
            reqwest::Method::POST,
            &format!("/client/v4/{kind}/{owner}/custom_csrs"),
            auth,
            Some(body.to_string()),
        )
        .await
    }
}

/// Cloudflare's documented example request, verbatim.
pub fn example_body() -> Value {
    json!({
        "common_name": "example.com",
        "country": "US",
        "locality": "San Francisco",
        "organization": "Cloudflare, Inc.",
        "sans": ["example.com", "www.example.com"],
        "state": "California",
        "description": "CSR for example.com wildcard",
        "key_type": "rsa2048",
        "name": "My Custom CSR",
        "organizational_unit": "Engineering"
    })
}

pub fn with(mut body: Value, key: &str, value: Value) -> Value {
    body[key] = value;
    body
}
