//! The `csrd` binary as a child process of a test, in a test's isolation. The binary's path
//! comes from the calling suite (`env!("CARGO_BIN_EXE_csrd")` exists only there).

use std::process::{Child, Command};

use crate::eventually::eventually;
use crate::isolation::Isolation;

/// A child process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `bin args…` with the isolation's environment (database, prefix, KEKs, …).
pub fn csrd_command(bin: &str, iso: &Isolation, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args).envs(iso.env());
    cmd
}

/// Runs `bin args…` to the end; panics with its stderr unless it succeeded; its stdout, trimmed.
pub fn run_ok(bin: &str, iso: &Isolation, args: &[&str]) -> String {
    let out = csrd_command(bin, iso, args)
        .output()
        .expect("csrd binary runs");
    assert!(
        out.status.success(),
        "csrd {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The arguments of `csrd token create --account <account> --permission <permission>`, then
/// `extra`.
pub fn token_create_args<'a>(
    account: &'a str,
    permission: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "token",
        "create",
        "--account",
        account,
        "--permission",
        permission,
    ];
    args.extend_from_slice(extra);
    args
}

/// The arguments of `csrd user create --email <email> --account <account>`.
pub fn user_create_args<'a>(email: &'a str, account: &'a str) -> [&'a str; 6] {
    ["user", "create", "--email", email, "--account", account]
}

/// `csrd token create --account <account> --permission write`: the new token.
pub fn write_token_for(bin: &str, iso: &Isolation, account: &str) -> String {
    run_ok(bin, iso, &token_create_args(account, "write", &[]))
}

/// A TCP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `base/readyz` answers 2xx.
pub async fn wait_ready(http: &reqwest::Client, base: &str) {
    eventually("csrd to become ready", || async {
        let ready = http.get(format!("{base}/readyz")).send().await;
        ready.is_ok_and(|r| r.status().is_success()).then_some(())
    })
    .await;
}
