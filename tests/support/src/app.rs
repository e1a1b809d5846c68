//! A csrd under test, on a tokio runtime of its own so that the test's end can wait for it.

use std::net::SocketAddr;
use std::time::Duration;

use axum::http::Method;
use csrd::auth::{ApiKey, ApiToken, Permission};
use csrd::crypto::Keyring;
use csrd::db::{Pool, build_pool, credentials};
use csrd::queue::memory::MemoryQueue;
use csrd::settings::Settings;
use csrd::startup::{self, Role, Running};
use serde_json::Value;
use tokio::runtime::Runtime;
use tower::ServiceExt;

use crate::client::{Auth, Body, RawResponse, Response, TestRequest};
use crate::fixtures::scope;
use crate::isolation::Isolation;

/// How long teardown lets the app's runtime finish blocking work (a key being generated).
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(10);
/// How long teardown waits for the app to work off its queues before stopping it.
const DRAIN_BEFORE_STOPPING: Duration = Duration::from_secs(10);

enum Transport {
    /// The real service: RabbitMQ, and HTTP on a port.
    Socket(SocketAddr),
    /// In memory: no broker, no socket; requests go through the router.
    Router(axum::Router),
}

pub struct TestApp {
    pub pool: Pool,
    /// A client for tests that talk HTTP themselves (`url`); socket apps only.
    pub http: reqwest::Client,
    pub keyring: Keyring,
    pub settings: Settings,
    transport: Transport,
    runtime: Option<Runtime>,
    running: Option<Running>,
    memory_queue: Option<MemoryQueue>,
    // Last: dropped after the app has stopped.
    pub iso: Isolation,
}

/// `csrd serve` against real Postgres and RabbitMQ, on a port.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_role(Role::Serve, configure).await
}

/// One role (`Serve`, or `Ingress` alone so that jobs wait in the queue).
pub async fn spawn_role(role: Role, configure: impl FnOnce(&mut Settings)) -> TestApp {
    csrd::telemetry::init();
    let iso = Isolation::new().await;
    if role != Role::Serve {
        startup::migrate(&iso.settings().db).await.unwrap();
    }
    let mut settings = iso.settings();
    configure(&mut settings);
    let runtime = app_runtime();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let started = {
        let settings = settings.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            startup::start(role, &settings, Some(listener)).await
        })
    };
    let running = started.await.unwrap().expect("csrd starts");
    let addr = running.http_addr.expect("an HTTP role");
    TestApp::new(
        iso,
        settings,
        runtime,
        Transport::Socket(addr),
        running,
        None,
    )
}

/// csrd's ingress and worker around the in-memory queue: real Postgres, no broker, no socket.
pub async fn spawn_in_memory() -> TestApp {
    spawn_in_memory_with(|_| {}).await
}

pub async fn spawn_in_memory_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    csrd::telemetry::init();
    let mut iso = Isolation::new().await;
    iso.uses_broker = false;
    let mut settings = iso.settings();
    // Nothing may reach for a broker: a test that does fails loudly.
    settings.broker.amqp_url = "amqp://csrd-in-memory-tests-use-no-broker.invalid:1/%2f".into();
    configure(&mut settings);
    let runtime = app_runtime();
    let started = {
        let settings = settings.clone();
        runtime.spawn(async move { startup::start_in_memory(&settings).await })
    };
    let app = started.await.unwrap().expect("csrd starts in memory");
    TestApp::new(
        iso,
        settings,
        runtime,
        Transport::Router(app.router),
        app.running,
        Some(app.queue),
    )
}

fn app_runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("csrd-under-test")
        .enable_all()
        .build()
        .unwrap()
}

impl TestApp {
    fn new(
        iso: Isolation,
        settings: Settings,
        runtime: Runtime,
        transport: Transport,
        running: Running,
        memory_queue: Option<MemoryQueue>,
    ) -> Self {
        Self {
            pool: build_pool(&iso.database_url, 2, "csrd-tests").unwrap(),
            http: reqwest::Client::new(),
            keyring: Keyring::parse(&iso.keks).unwrap(),
            settings,
            transport,
            runtime: Some(runtime),
            running: Some(running),
            memory_queue,
            iso,
        }
    }

    fn runtime(&self) -> &Runtime {
        self.runtime.as_ref().expect("the app is running")
    }

    /// The app's HTTP address (socket apps only).
    pub fn addr(&self) -> SocketAddr {
        match &self.transport {
            Transport::Socket(addr) => *addr,
            Transport::Router(_) => panic!("an in-memory app has no socket"),
        }
    }

    /// A URL on the app's admin listener (`/metrics`); socket apps only.
    pub fn admin_url(&self, path: &str) -> String {
        let addr = self
            .running
            .as_ref()
            .and_then(|r| r.admin_addr)
            .expect("an app with an admin listener");
        format!("http://{addr}{path}")
    }

    /// The sum of a metric's samples on the admin listener's `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self
            .http
            .get(self.admin_url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| l.starts_with(name) && !l.starts_with('#'))
            .filter(|l| l[name.len()..].starts_with([' ', '{']))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The in-memory queue (in-memory apps only).
    pub fn memory_queue(&self) -> &MemoryQueue {
        self.memory_queue.as_ref().expect("an in-memory app")
    }

    pub fn request(&self, method: Method, path: &str) -> TestRequest<'_> {
        TestRequest::new(self, method, path)
    }

    pub(crate) async fn dispatch(&self, request: TestRequest<'_>) -> RawResponse {
        match &self.transport {
            Transport::Socket(_) => self.over_socket(request).await,
            Transport::Router(router) => {
                let mut built = axum::http::Request::builder()
                    .method(request.method)
                    .uri(request.path);
                *built.headers_mut().unwrap() = request.headers;
                let body = match request.body {
                    Body::Empty => axum::body::Body::empty(),
                    Body::Bytes(b) => axum::body::Body::from(b),
                    Body::Stream(s) => s,
                };
                let built = built.body(body).unwrap();
                let router = router.clone();
                // The app's code runs on the app's runtime, whichever transport reaches it.
                let answered = self.runtime().spawn(async move {
                    let response = router.oneshot(built).await.unwrap();
                    let (parts, body) = response.into_parts();
                    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                    RawResponse {
                        status: parts.status.as_u16(),
                        headers: parts.headers,
                        body,
                    }
                });
                answered.await.unwrap()
            }
        }
    }

    async fn over_socket(&self, request: TestRequest<'_>) -> RawResponse {
        let mut req = self
            .http
            .request(request.method, self.url(&request.path))
            .headers(request.headers);
        req = match request.body {
            Body::Empty => req,
            Body::Bytes(b) => req.body(b),
            Body::Stream(s) => req.body(reqwest::Body::wrap_stream(s.into_data_stream())),
        };
        let resp = req.send().await.expect("request reaches csrd");
        RawResponse {
            status: resp.status().as_u16(),
            headers: resp.headers().clone(),
            body: resp.bytes().await.unwrap(),
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<String>,
    ) -> Response {
        let mut req = self.request(method, path).auth(auth);
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body);
        }
        let raw = req.send().await;
        Response {
            status: raw.status,
            body: raw.json(),
        }
    }

    pub async fn create(&self, kind: &str, owner: &str, auth: Auth<'_>, body: &Value) -> Response {
        self.send(
            Method::POST,
            &format!("/client/v4/{kind}/{owner}/custom_csrs"),
            auth,
            Some(body.to_string()),
        )
        .await
    }

    /// `POST …/accounts/{account}/custom_csrs/batches` with `items`, as the bearer `token`.
    pub async fn submit_batch(&self, account: &str, token: &str, items: Vec<Value>) -> RawResponse {
        self.request(
            Method::POST,
            &format!("/client/v4/accounts/{account}/custom_csrs/batches"),
        )
        .bearer(token)
        .json(&serde_json::json!({ "items": items }))
        .send()
        .await
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

    /// Another csrd process-equivalent (`Worker`, or a second `Ingress`) against the same
    /// database and prefix, on the app's runtime. Shut it down before the test ends.
    pub async fn start_role(&self, role: Role) -> Running {
        let settings = self.settings.clone();
        let listener = if role == Role::Worker {
            None
        } else {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.set_nonblocking(true).unwrap();
            Some(l)
        };
        self.runtime()
            .spawn(async move {
                let listener = listener.map(|l| tokio::net::TcpListener::from_std(l).unwrap());
                startup::start(role, &settings, listener).await
            })
            .await
            .unwrap()
            .expect("csrd role starts")
    }

    pub async fn start_worker(&self) -> Running {
        self.start_role(Role::Worker).await
    }

    pub async fn amqp_channel(&self) -> (lapin::Connection, lapin::Channel) {
        crate::broker::channel("csrd-tests").await
    }

    pub fn topology(&self) -> csrd::amqp::Topology {
        self.iso.topology()
    }

    pub async fn row_count(&self) -> i64 {
        crate::database::csr_rows(&self.pool).await
    }
}

/// Teardown: give the app a moment to finish what is queued, stop it gracefully and wait for
/// it, then check that no job was left in its queues, and no batch chunk undispatched in
/// Postgres — either is an accepted create nobody finished.
impl Drop for TestApp {
    fn drop(&mut self) {
        let Some(runtime) = self.runtime.take() else {
            return;
        };
        let running = self.running.take();
        let memory_queue = self.memory_queue.take();
        let topology = self.iso.uses_broker.then(|| self.iso.topology());
        let database_url = self.iso.database_url.clone();
        let outstanding = move || {
            let queue = memory_queue.clone();
            let topology = topology.clone();
            let database_url = database_url.clone();
            async move {
                let undispatched = undispatched_chunks(&database_url).await;
                if let Some(queue) = queue {
                    return queue.outstanding() + undispatched;
                }
                let Some(topology) = topology else {
                    return undispatched;
                };
                let (jobs, dead) = crate::broker::queued(&topology).await;
                (jobs + dead) as usize + undispatched
            }
        };
        // Another thread: this one may be inside the test's runtime, where blocking on the
        // app's is not allowed.
        let left = std::thread::spawn(move || {
            runtime.block_on(async {
                // Jobs still queued when the test ends (duplicates of a create already
                // answered, say) are the app's to finish, while its workers still run.
                let drained = || async { (outstanding().await == 0).then_some(()) };
                crate::poll_until(DRAIN_BEFORE_STOPPING, drained).await;
                if let Some(running) = running {
                    running.shutdown().await;
                }
            });
            let left = runtime.block_on(outstanding());
            runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
            left
        })
        .join();
        match left {
            Ok(0) => {}
            Ok(n) if !std::thread::panicking() => {
                panic!(
                    "teardown: {n} job(s) or batch chunk(s) left in the queues or undispatched after the app stopped"
                )
            }
            Ok(_) => {}
            Err(_) if !std::thread::panicking() => panic!("teardown failed"),
            Err(_) => {}
        }
    }
}

/// Batch chunks stored and not yet handed to the broker (0 when the table is not there).
async fn undispatched_chunks(database_url: &str) -> usize {
    let Ok(pool) = build_pool(database_url, 1, "csrd-tests-teardown") else {
        return 0;
    };
    let Ok(client) = pool.get().await else {
        return 0;
    };
    client
        .query_one(
            "SELECT count(*) FROM batch_chunks WHERE dispatched_at IS NULL",
            &[],
        )
        .await
        .map_or(0, |row| usize::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
