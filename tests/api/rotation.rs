//! The KEK rotation walkthrough of docs/custody.md, run for real against the `csrd` binary: add a
//! KEK (it decrypts), promote it (it encrypts), `kek rewrap` while the service keeps creating,
//! `keys verify` with the new KEK alone, remove the old one.

use std::process::Stdio;

use csrd::crypto::{KekId, Keyring};
use serde_json::Value;

use csrd_test_support::process::{Proc, csrd_command, free_port, wait_ready, write_token_for};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

/// `csrd serve` with `keks`, on a port of its own.
async fn serve(iso: &Isolation, keks: &str, http: &reqwest::Client) -> (Proc, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = csrd_command(CSRD, iso, &["serve"]);
    cmd.env("CSRD_KEKS", keks)
        .env("CSRD_LISTEN", &listen)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let proc = Proc(cmd.spawn().expect("csrd binary runs"));
    let base = format!("http://{listen}");
    wait_ready(http, &base).await;
    (proc, base)
}

async fn create(http: &reqwest::Client, base: &str, token: &str) -> String {
    let resp = http
        .post(format!("{base}/client/v4/accounts/{ACCOUNT_A}/custom_csrs"))
        .bearer_auth(token)
        .json(&p256_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let body: Value = resp.json().await.unwrap();
    body["result"]["id"].as_str().unwrap().to_owned()
}

struct Ran {
    success: bool,
    stdout: String,
    stderr: String,
}

fn csrd(iso: &Isolation, keks: &str, args: &[&str]) -> Ran {
    let out = csrd_command(CSRD, iso, args)
        .env("CSRD_KEKS", keks)
        .output()
        .expect("csrd binary runs");
    Ran {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `kek status`'s record count for `kek_id`.
fn records_of(iso: &Isolation, keks: &str, kek_id: &str) -> i64 {
    let status = csrd(iso, keks, &["kek", "status"]);
    assert!(status.success, "{}", status.stderr);
    status
        .stdout
        .lines()
        .find_map(|line| {
            let mut cols = line.split('\t');
            (cols.next() == Some(kek_id))
                .then(|| cols.next()?.strip_suffix(" records")?.parse().ok())
                .flatten()
        })
        .unwrap_or(0)
}

#[tokio::test]
async fn kek_rotation_walkthrough_add_promote_rewrap_verify_remove() {
    let iso = Isolation::new().await;
    let http = reqwest::Client::new();
    let old = iso.keks.clone();
    let new = Keyring::generate_entry(&KekId::parse("kek-2").unwrap()).to_string();
    assert!(csrd(&iso, &old, &["migrate"]).success);
    let token = write_token_for(CSRD, &iso, ACCOUNT_A);

    // Before: records under the old KEK.
    let (service, base) = serve(&iso, &old, &http).await;
    for _ in 0..4 {
        create(&http, &base, &token).await;
    }
    drop(service);

    // 1. Add: the new KEK decrypts, the old one still encrypts.
    let added = format!("{old},{new}");
    let (service, base) = serve(&iso, &added, &http).await;
    create(&http, &base, &token).await;
    drop(service);
    assert_eq!(records_of(&iso, &added, "test-kek"), 5);

    // 2. Promote: the new KEK encrypts new records.
    let promoted = format!("{new},{old}");
    let (_service, base) = serve(&iso, &promoted, &http).await;
    create(&http, &base, &token).await;
    assert_eq!(records_of(&iso, &promoted, "kek-2"), 1);

    // 3. Rewrap while the service keeps creating.
    let creating = {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        tokio::spawn(async move {
            for _ in 0..6 {
                create(&http, &base, &token).await;
            }
        })
    };
    let rewrap = csrd(&iso, &promoted, &["kek", "rewrap"]);
    assert!(rewrap.success, "{}", rewrap.stderr);
    assert_eq!(rewrap.stdout, "5 rewrapped, 0 skipped, 0 failed");
    creating.await.unwrap();
    assert_eq!(records_of(&iso, &promoted, "test-kek"), 0);
    assert_eq!(records_of(&iso, &promoted, "kek-2"), 12);
    // Resumable and idempotent: a second run finds nothing left to do.
    let again = csrd(&iso, &promoted, &["kek", "rewrap"]);
    assert_eq!(again.stdout, "0 rewrapped, 0 skipped, 0 failed");

    // 4. Verify with the new KEK alone: every key opens and matches its CSR.
    let verify = csrd(&iso, &new, &["keys", "verify"]);
    assert!(verify.success, "{}", verify.stderr);
    assert_eq!(verify.stdout.lines().last(), Some("12 verified, 0 failed"));

    // 5. Remove: the service runs on the new KEK alone.
    drop(_service);
    let (_service, base) = serve(&iso, &new, &http).await;
    create(&http, &base, &token).await;
    let status = csrd(&iso, &new, &["kek", "status"]);
    assert!(
        status.stdout.contains(
            "test-kek\t0 records\tcheck value stored\tnot configured, wraps nothing: retired"
        ),
        "{}",
        status.stdout
    );
}

#[tokio::test]
async fn kek_rewrap_refuses_a_wrong_key_before_touching_a_record() {
    let iso = Isolation::new().await;
    let http = reqwest::Client::new();
    assert!(csrd(&iso, &iso.keks, &["migrate"]).success);
    let token = write_token_for(CSRD, &iso, ACCOUNT_A);
    let (service, base) = serve(&iso, &iso.keks, &http).await;
    create(&http, &base, &token).await;
    drop(service);

    let new = Keyring::generate_entry(&KekId::parse("kek-2").unwrap()).to_string();
    let impostor = Keyring::generate_entry(&KekId::parse("test-kek").unwrap()).to_string();
    let refused = csrd(&iso, &format!("{new},{impostor}"), &["kek", "rewrap"]);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("does not match"),
        "{}",
        refused.stderr
    );
    assert_eq!(records_of(&iso, &iso.keks, "test-kek"), 1);

    // A record under a KEK that is not configured is reported and left alone.
    let missing = csrd(&iso, &new, &["kek", "rewrap"]);
    assert!(!missing.success);
    assert_eq!(missing.stdout, "0 rewrapped, 0 skipped, 1 failed");
    assert!(missing.stderr.contains("test-kek"), "{}", missing.stderr);
    assert_eq!(records_of(&iso, &iso.keks, "test-kek"), 1);
}
