//! The system under test: `csrd ingress` and two `csrd worker` processes on their own database
//! and AMQP prefix, and the faults that can be done to them and to the shared services.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use csrd_test_support::{ACCOUNT_A, Isolation, eventually_within, services};

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// SIGKILL one worker process mid-load, then start a new one.
    KillWorker,
    /// `rabbitmqctl stop_app`, a pause, `rabbitmqctl start_app`.
    RestartBroker,
    /// PostgreSQL restarted with a fast shutdown (`pg_ctlcluster <version> main restart -m fast`).
    RestartPostgres,
    /// Unbind the ingress's event queue for a while, so completion events go nowhere.
    DropEvents,
}

pub struct Cluster {
    pub iso: Isolation,
    pub token: String,
    port: u16,
    ingress: Child,
    workers: Vec<Child>,
}

#[track_caller]
fn succeeded(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A failing test must not leave processes behind (they would also hold the test's output
/// pipes open).
impl Drop for Cluster {
    fn drop(&mut self) {
        for c in self
            .workers
            .iter_mut()
            .chain(std::iter::once(&mut self.ingress))
        {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Brings RabbitMQ back even if the test panics while it is stopped.
struct BrokerGuard;

impl Drop for BrokerGuard {
    fn drop(&mut self) {
        let _ = services::rabbitmqctl(&["start_app"]);
    }
}

impl Cluster {
    pub async fn start() -> Self {
        let iso = Isolation::new().await;
        let out = Command::new(CSRD)
            .arg("migrate")
            .envs(iso.env())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(CSRD)
            .args([
                "token",
                "create",
                "--account",
                ACCOUNT_A,
                "--permission",
                "write",
            ])
            .envs(iso.env())
            .output()
            .unwrap();
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let cluster = Self {
            ingress: spawn(&iso, "ingress", port),
            workers: vec![spawn(&iso, "worker", 0), spawn(&iso, "worker", 0)],
            iso,
            token,
            port,
        };
        cluster.wait_ready().await;
        cluster
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        let url = format!("{}/readyz", self.base_url());
        eventually_within(
            "csrd ingress to become ready",
            Duration::from_secs(30),
            || async {
                let ready = http.get(&url).send().await;
                ready.is_ok_and(|r| r.status().is_success()).then_some(())
            },
        )
        .await;
    }

    pub async fn inject(&mut self, fault: Fault) {
        match fault {
            Fault::KillWorker => {
                let pid = self.workers[0].id().to_string();
                succeeded(
                    "kill",
                    Command::new("kill").args(["-KILL", &pid]).output().unwrap(),
                );
                let _ = self.workers[0].wait();
                tokio::time::sleep(Duration::from_secs(2)).await;
                self.workers[0] = spawn(&self.iso, "worker", 0);
            }
            Fault::RestartBroker => {
                let _restart_even_on_panic = BrokerGuard;
                succeeded("rabbitmqctl stop_app", services::rabbitmqctl(&["stop_app"]));
                tokio::time::sleep(Duration::from_secs(4)).await;
                succeeded(
                    "rabbitmqctl start_app",
                    services::rabbitmqctl(&["start_app"]),
                );
            }
            Fault::RestartPostgres => {
                succeeded("restarting PostgreSQL", services::restart_postgres());
            }
            Fault::DropEvents => {
                let queue = self.instance_queue();
                let exchange = format!("{}.events", self.iso.prefix);
                let instance = queue.rsplit('.').next().unwrap().to_owned();
                let (conn, ch) = amqp().await;
                ch.queue_unbind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    instance.as_str().into(),
                    Default::default(),
                )
                .await
                .unwrap();
                tokio::time::sleep(Duration::from_secs(6)).await;
                ch.queue_bind(
                    queue.as_str().into(),
                    exchange.as_str().into(),
                    instance.as_str().into(),
                    Default::default(),
                    Default::default(),
                )
                .await
                .unwrap();
                let _ = conn.close(200, "done".into()).await;
            }
        }
    }

    /// The ingress's exclusive completion-event queue.
    fn instance_queue(&self) -> String {
        let out = services::rabbitmqctl(&["list_queues", "-q", "--no-table-headers", "name"]);
        let prefix = format!("{}.events.", self.iso.prefix);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| {
                panic!(
                    "no event queue {prefix}* among: {}",
                    String::from_utf8_lossy(&out.stdout)
                )
            })
            .to_owned()
    }

    /// Graceful stop of every process (SIGTERM), so the queues can be checked drained.
    pub async fn stop(self) {
        let pids: Vec<String> = self
            .workers
            .iter()
            .chain(std::iter::once(&self.ingress))
            .map(|c| c.id().to_string())
            .collect();
        for pid in &pids {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
        // Drop waits for the exits (and kills whatever has not stopped).
        tokio::task::spawn_blocking(move || {
            let mut this = self;
            for c in this
                .workers
                .iter_mut()
                .chain(std::iter::once(&mut this.ingress))
            {
                let _ = c.wait();
            }
        })
        .await
        .unwrap();
    }
}

fn spawn(iso: &Isolation, role: &str, port: u16) -> Child {
    let mut cmd = Command::new(CSRD);
    cmd.arg(role)
        .envs(iso.env())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if port != 0 {
        cmd.env("CSRD_LISTEN", format!("127.0.0.1:{port}"));
    }
    cmd.spawn().expect("csrd runs")
}

pub async fn amqp() -> (lapin::Connection, lapin::Channel) {
    csrd_test_support::broker::channel("csrd-faults").await
}
