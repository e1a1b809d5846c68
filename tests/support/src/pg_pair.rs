//! A PostgreSQL primary and a synchronous streaming replica of a test's own, beside the
//! machine's cluster (never touched): the programs `pg_createcluster` wraps (`initdb`,
//! `pg_ctl`), in a temporary directory, on ports of their own, run as user `postgres`. The
//! replica is made with `pg_basebackup -R`, and the primary waits for it on every commit
//! (`synchronous_standby_names = '*'`), so a commit the primary acknowledged is on the replica.
//! Dropping the pair stops both servers and removes the directory.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::process::free_port;

pub struct PgServer {
    pub port: u16,
    pub data: PathBuf,
}

pub struct PgPair {
    pub primary: PgServer,
    pub replica: PgServer,
    dir: PathBuf,
    bin: PathBuf,
}

/// The newest installed PostgreSQL's programs (`/usr/lib/postgresql/<version>/bin`).
fn bin_dir() -> PathBuf {
    let version = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's server programs (/usr/lib/postgresql) are needed")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter_map(|v| v.parse::<u32>().ok())
        .max()
        .expect("a PostgreSQL version directory");
    PathBuf::from(format!("/usr/lib/postgresql/{version}/bin"))
}

#[track_caller]
fn ok(what: &str, out: Output) -> Output {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl PgPair {
    /// Starts the primary, makes the replica from it, and waits until the primary counts the
    /// replica as its synchronous standby.
    pub fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("csrd-pgpair-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let bin = bin_dir();
        let pair = Self {
            primary: PgServer {
                port: free_port(),
                data: dir.join("primary"),
            },
            replica: PgServer {
                port: free_port(),
                data: dir.join("replica"),
            },
            dir,
            bin,
        };
        ok(
            "chown",
            Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&pair.dir)
                .output()
                .unwrap(),
        );
        ok(
            "initdb",
            pair.as_postgres("initdb")
                .args(["--auth=trust", "--username=postgres", "--no-sync", "-D"])
                .arg(&pair.primary.data)
                .output()
                .unwrap(),
        );
        pair.append_conf(
            &pair.primary,
            "wal_level = replica\nmax_wal_senders = 5\nsynchronous_commit = on\n\
             synchronous_standby_names = '*'\nmax_connections = 200\n",
        );
        pair.pg_ctl(&pair.primary, &["start", "-w", "-t", "60"]);
        ok(
            "pg_basebackup -R",
            pair.as_postgres("pg_basebackup")
                .args([
                    "-h",
                    "127.0.0.1",
                    "-U",
                    "postgres",
                    "-X",
                    "stream",
                    "-R",
                    "-D",
                ])
                .arg(&pair.replica.data)
                .args(["-p", &pair.primary.port.to_string()])
                .output()
                .unwrap(),
        );
        // The replica carries the primary's configuration: once promoted it must not wait for
        // a standby of its own (there is none), and it listens on its own port.
        pair.append_conf(&pair.replica, "synchronous_standby_names = ''\n");
        pair.pg_ctl(&pair.replica, &["start", "-w", "-t", "60"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while pair.primary_sql("SELECT sync_state FROM pg_stat_replication") != "sync" {
            assert!(
                Instant::now() < deadline,
                "the replica never became the primary's synchronous standby"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        pair
    }

    /// `postgres://postgres@primary,replica/<db>?target_session_attrs=read-write`: what a client
    /// configured for failover connects to.
    pub fn failover_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/{db}?target_session_attrs=read-write&sslmode=disable",
            self.primary.port, self.replica.port
        )
    }

    /// The primary's URL for `db`.
    pub fn primary_url(&self, db: &str) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{db}?sslmode=disable",
            self.primary.port
        )
    }

    /// SIGKILL of the primary's postmaster: no shutdown, no goodbye to the clients.
    pub fn kill_primary(&self) {
        let pid = std::fs::read_to_string(self.primary.data.join("postmaster.pid"))
            .expect("the primary runs")
            .lines()
            .next()
            .unwrap()
            .trim()
            .to_owned();
        ok(
            "kill -KILL",
            Command::new("kill").args(["-KILL", &pid]).output().unwrap(),
        );
    }

    /// Promotes the replica and waits until it takes writes.
    pub fn promote_replica(&self) {
        self.pg_ctl(&self.replica, &["promote", "-w", "-t", "60"]);
    }

    /// One value from the primary, by `psql` (the empty string for no row).
    pub fn primary_sql(&self, sql: &str) -> String {
        self.sql(&self.primary, sql)
    }

    /// One value from the replica (or the promoted replica).
    pub fn replica_sql(&self, sql: &str) -> String {
        self.sql(&self.replica, sql)
    }

    fn sql(&self, server: &PgServer, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-tAq",
                "-c",
                sql,
            ])
            .args(["-p", &server.port.to_string()])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn as_postgres(&self, program: &str) -> Command {
        let mut cmd = Command::new("runuser");
        cmd.args(["-u", "postgres", "--"])
            .arg(self.bin.join(program))
            .current_dir(&self.dir);
        cmd
    }

    fn append_conf(&self, server: &PgServer, extra: &str) {
        use std::io::Write;
        let conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\n{extra}",
            server.port,
            self.dir.display()
        );
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(server.data.join("postgresql.conf"))
            .unwrap();
        file.write_all(conf.as_bytes()).unwrap();
    }

    fn pg_ctl(&self, server: &PgServer, args: &[&str]) {
        let log = server.data.with_extension("log");
        ok(
            &format!("pg_ctl {args:?}"),
            self.as_postgres("pg_ctl")
                .arg("-D")
                .arg(&server.data)
                .arg("-l")
                .arg(&log)
                .args(args)
                .output()
                .unwrap(),
        );
    }

    fn stop(&self, server: &PgServer) {
        if Path::new(&server.data.join("postmaster.pid")).exists() {
            let _ = self
                .as_postgres("pg_ctl")
                .arg("-D")
                .arg(&server.data)
                .args(["stop", "-m", "immediate", "-w"])
                .output();
        }
    }
}

impl Drop for PgPair {
    fn drop(&mut self) {
        self.stop(&self.replica);
        self.stop(&self.primary);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
