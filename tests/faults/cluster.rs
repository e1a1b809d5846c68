//! The system under test: `csrd ingress` and `csrd worker` processes (one and two, or as many
//! as a scenario asks) on their own database and AMQP prefix — against the machine's RabbitMQ
//! or a three-node RabbitMQ cluster of their own — and the faults that can be done to them and
//! to the services.

use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use csrd_test_support::pg_pair::PgPair;
use csrd_test_support::process::{csrd_command, free_port, token_create_args};
use csrd_test_support::rabbit_node::RabbitCluster;
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
    /// On the scenario's own three-node cluster: `stop_app` on the node leading the jobs
    /// queue, `start_app` later, then SIGKILL another node and start it again.
    ClusterNodesDown,
    /// On the scenario's own Postgres primary and synchronous replica: SIGKILL the primary,
    /// promote the replica a second later (a failover manager's detection, in small).
    FailoverPostgres,
}

/// How many of each process, and which broker.
pub struct Shape {
    pub ingresses: usize,
    pub workers: usize,
    /// A RabbitMQ cluster of the scenario's own, instead of the machine's node.
    pub rabbit_cluster: Option<RabbitCluster>,
    /// A Postgres primary and replica of the scenario's own, reached by a failover URL,
    /// instead of the machine's server.
    pub pg_pair: Option<PgPair>,
}

impl Default for Shape {
    fn default() -> Self {
        Self {
            ingresses: 1,
            workers: 2,
            rabbit_cluster: None,
            pg_pair: None,
        }
    }
}

pub struct Cluster {
    pub iso: Isolation,
    pub token: String,
    ports: Vec<u16>,
    ingresses: Vec<Child>,
    workers: Vec<Child>,
    /// Dropped after the processes (fields drop in order).
    pub rabbit_cluster: Option<RabbitCluster>,
    pub pg_pair: Option<PgPair>,
    /// From the primary's SIGKILL until every ingress was ready again (FailoverPostgres).
    pub recovered_after: Option<Duration>,
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
        for c in self.workers.iter_mut().chain(self.ingresses.iter_mut()) {
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
        Self::start_shaped(Shape::default()).await
    }

    pub async fn start_shaped(shape: Shape) -> Self {
        let mut iso = match &shape.pg_pair {
            Some(pair) => {
                Isolation::on_server(&pair.failover_url("postgres"), |db| pair.failover_url(db))
                    .await
            }
            None => Isolation::new().await,
        };
        if shape.rabbit_cluster.is_some() {
            // Its queues live and die with the scenario's own cluster.
            iso.uses_broker = false;
        }
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
        let out = csrd_command(CSRD, &iso, &token_create_args(ACCOUNT_A, "write", &[]))
            .output()
            .unwrap();
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let urls = shape.rabbit_cluster.as_ref().map(RabbitCluster::urls);
        let ports: Vec<u16> = (0..shape.ingresses).map(|_| free_port()).collect();
        let cluster = Self {
            ingresses: ports
                .iter()
                .map(|port| spawn(&iso, "ingress", *port, urls.as_deref()))
                .collect(),
            workers: (0..shape.workers)
                .map(|_| spawn(&iso, "worker", 0, urls.as_deref()))
                .collect(),
            iso,
            token,
            ports,
            rabbit_cluster: shape.rabbit_cluster,
            pg_pair: shape.pg_pair,
            recovered_after: None,
        };
        cluster.wait_ready().await;
        cluster
    }

    /// Every ingress's base URL.
    pub fn base_urls(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}"))
            .collect()
    }

    /// The broker to count the scenario's queues on.
    pub fn amqp_url(&self) -> String {
        match &self.rabbit_cluster {
            Some(rabbit) => rabbit.nodes[0].amqp_url(),
            None => csrd_test_support::amqp_url(),
        }
    }

    async fn wait_ready(&self) {
        let http = reqwest::Client::new();
        for base in self.base_urls() {
            let url = format!("{base}/readyz");
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
                self.workers[0] = spawn(&self.iso, "worker", 0, None);
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
            Fault::ClusterNodesDown => self.take_cluster_nodes_down().await,
            Fault::FailoverPostgres => self.fail_over_postgres().await,
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

    /// `stop_app` on the node leading the jobs queue and `start_app` 5 s later; then SIGKILL
    /// another node (the new leader if it moved, else the next one) and boot it again.
    async fn take_cluster_nodes_down(&mut self) {
        let jobs = self.iso.topology().jobs_queue().as_str().to_owned();
        let rabbit = self.rabbit_cluster.as_ref().expect("a RabbitMQ cluster");
        let members = rabbit.members_of(&jobs);
        assert_eq!(
            members.len(),
            3,
            "{jobs} is replicated on every node: {members:?}"
        );
        let leader = rabbit
            .leader_of(&jobs)
            .expect("the jobs queue has a leader");
        println!(
            "cluster: stop_app on {} (leads {jobs})",
            rabbit.nodes[leader].name
        );
        succeeded(
            "rabbitmqctl stop_app",
            rabbit.nodes[leader].ctl(&["stop_app"]),
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        succeeded(
            "rabbitmqctl start_app",
            rabbit.nodes[leader].ctl(&["start_app"]),
        );
        tokio::time::sleep(Duration::from_secs(3)).await;
        let victim = match rabbit.leader_of(&jobs) {
            Some(now) if now != leader => now,
            _ => (leader + 1) % rabbit.nodes.len(),
        };
        println!("cluster: SIGKILL {}", rabbit.nodes[victim].name);
        rabbit.nodes[victim].kill();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let node = &rabbit.nodes[victim];
        tokio::task::block_in_place(|| node.boot());
        println!("cluster: {} back", node.name);
    }

    /// SIGKILL the primary, promote the replica a second later, and time how long until every
    /// ingress is ready again (it says "not ready" while no writable Postgres answers).
    async fn fail_over_postgres(&mut self) {
        let pair = self.pg_pair.as_ref().expect("a Postgres pair");
        let killed = std::time::Instant::now();
        pair.kill_primary();
        println!("failover: primary SIGKILLed");
        tokio::time::sleep(Duration::from_secs(1)).await;
        tokio::task::block_in_place(|| pair.promote_replica());
        println!(
            "failover: replica promoted {:.1} s after the kill",
            killed.elapsed().as_secs_f64()
        );
        self.wait_ready().await;
        let recovered = killed.elapsed();
        println!(
            "failover: every ingress ready again {:.1} s after the kill",
            recovered.as_secs_f64()
        );
        self.recovered_after = Some(recovered);
    }

    /// Panics unless every csrd process started with the scenario still runs (none exited,
    /// none was restarted).
    pub fn assert_all_running(&mut self) {
        for c in self.workers.iter_mut().chain(self.ingresses.iter_mut()) {
            let status = c.try_wait().expect("the process can be waited on");
            assert!(
                status.is_none(),
                "csrd process {} exited: {status:?}",
                c.id()
            );
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
            .chain(self.ingresses.iter())
            .map(|c| c.id().to_string())
            .collect();
        for pid in &pids {
            let _ = Command::new("kill").args(["-TERM", pid]).status();
        }
        // Drop waits for the exits (and kills whatever has not stopped).
        tokio::task::spawn_blocking(move || {
            let mut this = self;
            for c in this.workers.iter_mut().chain(this.ingresses.iter_mut()) {
                let _ = c.wait();
            }
        })
        .await
        .unwrap();
    }
}

fn spawn(iso: &Isolation, role: &str, port: u16, amqp_urls: Option<&str>) -> Child {
    let mut cmd = Command::new(CSRD);
    cmd.arg(role)
        .envs(iso.env())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(urls) = amqp_urls {
        cmd.env("CSRD_AMQP_URLS", urls);
    }
    if port != 0 {
        cmd.env("CSRD_LISTEN", format!("127.0.0.1:{port}"));
    }
    cmd.spawn().expect("csrd runs")
}

pub async fn amqp() -> (lapin::Connection, lapin::Channel) {
    csrd_test_support::broker::channel("csrd-faults").await
}
