//! Acting on the RabbitMQ and PostgreSQL servers themselves (forced disconnects, fault
//! injection): local commands by default, or the containers' when `scripts/test` started the
//! services with docker compose (it sets `CSRD_TEST_RABBITMQCTL` and
//! `CSRD_TEST_RESTART_POSTGRES`).

use std::process::{Command, Output};

fn command(line: &str) -> Command {
    let mut words = line.split_whitespace();
    let mut cmd = Command::new(words.next().expect("a command"));
    cmd.args(words);
    cmd
}

/// Runs `rabbitmqctl` with `args`.
pub fn rabbitmqctl(args: &[&str]) -> Output {
    let line = std::env::var("CSRD_TEST_RABBITMQCTL").unwrap_or_else(|_| "rabbitmqctl".into());
    command(&line)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{line} (RabbitMQ's CLI) must be runnable: {e}"))
}

/// Restarts PostgreSQL (fast shutdown: open connections are cut).
pub fn restart_postgres() -> Output {
    if let Ok(line) = std::env::var("CSRD_TEST_RESTART_POSTGRES") {
        return command(&line).output().unwrap();
    }
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("a local PostgreSQL cluster (pg_ctlcluster) is needed to restart it")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max()
        .expect("a PostgreSQL version directory");
    Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            &version,
            "main",
            "restart",
            "-m",
            "fast",
        ])
        .output()
        .unwrap()
}
