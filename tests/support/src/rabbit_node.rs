//! Extra RabbitMQ nodes beside the machine's own, for tests that need a broker of their own:
//! a TLS listener, a cluster. Each node has its own name, ports and data directory under the
//! system temp directory; dropping it stops the node and removes the directory. The machine's
//! own node (`rabbit@…`, port 5672) is never touched.
//!
//! Nodes run as the `rabbitmq` user through Debian's wrapper scripts (as the machine's node
//! does), so they share its Erlang cookie and `rabbitmqctl -n <node>` reaches them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use crate::process::free_port;

/// A CA and a server certificate for `localhost` / 127.0.0.1 signed by it, made with rcgen.
pub struct TestCa {
    pub ca_pem: String,
    pub server_pem: String,
    pub server_key_pem: String,
}

impl TestCa {
    pub fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "csrd test CA");
        let ca_cert = ca_params.self_signed(&ca_key).unwrap();
        let server_key = KeyPair::generate().unwrap();
        let mut server_params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        server_params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let issuer = Issuer::new(ca_params, ca_key);
        let server_cert = server_params.signed_by(&server_key, &issuer).unwrap();
        Self {
            ca_pem: ca_cert.pem(),
            server_pem: server_cert.pem(),
            server_key_pem: server_key.serialize_pem(),
        }
    }
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

/// One extra RabbitMQ node.
pub struct RabbitNode {
    pub name: String,
    pub amqp_port: u16,
    /// The AMQPS port, when started with TLS.
    pub tls_port: Option<u16>,
    pub dir: PathBuf,
    env: Vec<(&'static str, String)>,
}

fn write(path: &Path, contents: &str) {
    std::fs::write(path, contents).unwrap();
}

fn chown_to_rabbitmq(dir: &Path) {
    let out = Command::new("chown")
        .args(["-R", "rabbitmq:rabbitmq"])
        .arg(dir)
        .output()
        .expect("chown runs");
    assert!(out.status.success(), "chown: {:?}", out);
}

impl RabbitNode {
    /// Starts a node named `csrd-<label>-<random>@localhost` and waits until it runs. With
    /// `tls`, it also listens for AMQPS with the CA's server certificate.
    pub fn start(label: &str, tls: Option<&TestCa>) -> Self {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let name = format!("csrd-{label}-{suffix}@localhost");
        let dir = std::env::temp_dir().join(format!("csrd-rabbit-{label}-{suffix}"));
        std::fs::create_dir_all(dir.join("mnesia")).unwrap();
        std::fs::create_dir_all(dir.join("log")).unwrap();
        let amqp_port = free_port();
        let dist_port = free_port();
        let mut conf = format!(
            "listeners.tcp.default = {amqp_port}\nloopback_users.guest = true\n\
             # quorum queues need no more than this on a test machine\n\
             vm_memory_high_watermark.relative = 0.2\n"
        );
        let tls_port = tls.map(|ca| {
            let port = free_port();
            write(&dir.join("ca.pem"), &ca.ca_pem);
            write(&dir.join("server.pem"), &ca.server_pem);
            write(&dir.join("server.key"), &ca.server_key_pem);
            conf.push_str(&format!(
                "listeners.ssl.default = {port}\n\
                 ssl_options.cacertfile = {d}/ca.pem\n\
                 ssl_options.certfile = {d}/server.pem\n\
                 ssl_options.keyfile = {d}/server.key\n\
                 ssl_options.verify = verify_none\n\
                 ssl_options.fail_if_no_peer_cert = false\n",
                d = dir.display()
            ));
            port
        });
        write(&dir.join("rabbitmq.conf"), &conf);
        write(&dir.join("enabled_plugins"), "[].\n");
        chown_to_rabbitmq(&dir);
        let d = dir.display().to_string();
        let env = vec![
            ("RABBITMQ_NODENAME", name.clone()),
            ("RABBITMQ_NODE_PORT", amqp_port.to_string()),
            ("RABBITMQ_DIST_PORT", dist_port.to_string()),
            ("RABBITMQ_MNESIA_BASE", format!("{d}/mnesia")),
            ("RABBITMQ_LOG_BASE", format!("{d}/log")),
            ("RABBITMQ_CONFIG_FILE", format!("{d}/rabbitmq.conf")),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE",
                format!("{d}/enabled_plugins"),
            ),
            ("RABBITMQ_PID_FILE", format!("{d}/pid")),
        ];
        let node = Self {
            name,
            amqp_port,
            tls_port,
            dir,
            env,
        };
        node.boot();
        node
    }

    /// Starts the node's Erlang VM (again, after `kill`) and waits for RabbitMQ to run on it.
    pub fn boot(&self) {
        let started = Command::new("rabbitmq-server")
            .arg("-detached")
            .envs(self.env.iter().cloned())
            .output()
            .expect("rabbitmq-server runs");
        assert!(started.status.success(), "rabbitmq-server: {started:?}");
        self.wait_running();
    }

    /// Waits until the node's VM and RabbitMQ application run (up to a minute).
    pub fn wait_running(&self) {
        let pid_file = self.dir.join("pid");
        for _ in 0..100 {
            if pid_file.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let waited = self.ctl(&["wait", &pid_file.display().to_string(), "--timeout", "60"]);
        assert!(
            waited.status.success(),
            "{} did not start: {}",
            self.name,
            String::from_utf8_lossy(&waited.stderr)
        );
    }

    /// `rabbitmqctl -n <node> args…`.
    pub fn ctl(&self, args: &[&str]) -> Output {
        Command::new("rabbitmqctl")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("rabbitmqctl runs")
    }

    /// `amqp://guest:guest@127.0.0.1:<port>/%2f`.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.amqp_port)
    }

    /// The OS process of the node's Erlang VM.
    pub fn pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join("pid"))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Kills the node's VM outright (SIGKILL): no goodbye to clients or peers.
    pub fn kill(&self) {
        if let Some(pid) = self.pid() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            let _ = std::fs::remove_file(self.dir.join("pid"));
        }
    }
}

impl Drop for RabbitNode {
    fn drop(&mut self) {
        let _ = self.ctl(&["stop"]);
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Several nodes joined into one RabbitMQ cluster (`rabbitmqctl join_cluster`).
pub struct RabbitCluster {
    pub nodes: Vec<RabbitNode>,
}

impl RabbitCluster {
    /// Starts `size` nodes at once, then joins the others to the first.
    pub fn start(size: usize) -> Self {
        let nodes: Vec<RabbitNode> = std::thread::scope(|scope| {
            let starting: Vec<_> = (0..size)
                .map(|i| scope.spawn(move || RabbitNode::start(&format!("c{i}"), None)))
                .collect();
            starting.into_iter().map(|s| s.join().unwrap()).collect()
        });
        for node in &nodes[1..] {
            for args in [
                vec!["stop_app"],
                vec!["join_cluster", nodes[0].name.as_str()],
                vec!["start_app"],
            ] {
                let out = node.ctl(&args);
                assert!(
                    out.status.success(),
                    "{} {args:?}: {}",
                    node.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        let cluster = Self { nodes };
        let status = cluster.nodes[0].ctl(&["cluster_status", "--formatter", "json"]);
        let status = String::from_utf8_lossy(&status.stdout);
        for node in &cluster.nodes {
            assert!(status.contains(&node.name), "{} not in {status}", node.name);
        }
        cluster
    }

    /// Every node's AMQP URL, comma-separated (for `CSRD_AMQP_URLS`).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(RabbitNode::amqp_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The names of the nodes holding a replica of quorum queue `queue`.
    pub fn members_of(&self, queue: &str) -> Vec<String> {
        let out = self.nodes[0].ctl(&[
            "list_queues",
            "name",
            "members",
            "--quiet",
            "--no-table-headers",
        ]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find(|line| line.split_whitespace().next() == Some(queue))
            .map(|line| {
                self.nodes
                    .iter()
                    .filter(|n| line.contains(&n.name))
                    .map(|n| n.name.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The index of the node leading quorum queue `queue`, asked of a running node.
    pub fn leader_of(&self, queue: &str) -> Option<usize> {
        for asked in &self.nodes {
            let out = asked.ctl(&[
                "list_queues",
                "name",
                "leader",
                "--quiet",
                "--no-table-headers",
            ]);
            if !out.status.success() {
                continue;
            }
            let listing = String::from_utf8_lossy(&out.stdout);
            let leader = listing.lines().find_map(|line| {
                let mut cols = line.split_whitespace();
                (cols.next() == Some(queue)).then(|| cols.next().map(str::to_owned))?
            })?;
            return self.nodes.iter().position(|n| n.name == leader);
        }
        None
    }
}
