//! The real binary: `csrd ingress` and two `csrd worker` processes sharing one queue, and the
//! credential subcommands.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::csr_check::parse_csr;
use csrd_test_support::process::{
    Proc, csrd_command, free_port, run_ok, token_create_args, user_create_args, wait_ready,
};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

fn spawn(iso: &Isolation, args: &[&str], extra: &[(&str, String)]) -> Proc {
    let mut cmd = csrd_command(CSRD, iso, args);
    cmd.stdout(Stdio::null()).stderr(Stdio::inherit());
    cmd.envs(extra.iter().map(|(k, v)| (*k, v.clone())));
    Proc(cmd.spawn().expect("csrd binary runs"))
}

fn run(iso: &Isolation, args: &[&str]) -> std::process::Output {
    csrd_command(CSRD, iso, args)
        .output()
        .expect("csrd binary runs")
}

/// A client for the csrd listening on `listen`, and its base URL, once it is ready.
async fn client_once_ready(listen: &str) -> (reqwest::Client, String) {
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;
    (http, base)
}

#[tokio::test]
async fn ingress_and_two_workers_in_separate_processes_create_csrs() {
    let iso = Isolation::new().await;
    let migrate = run(&iso, &["migrate"]);
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );

    let token = run(
        &iso,
        &[
            "token",
            "create",
            "--account",
            ACCOUNT_A,
            "--zone",
            ZONE_A,
            "--permission",
            "write",
            "--name",
            "ci",
        ],
    );
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );
    let token = String::from_utf8(token.stdout).unwrap();
    assert_eq!(token.lines().count(), 1, "the token alone on stdout");
    let token = token.trim().to_owned();

    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let _w1 = spawn(&iso, &["worker"], &[]);
    let _w2 = spawn(&iso, &["worker"], &[]);
    let _ingress = spawn(&iso, &["ingress"], &[("CSRD_LISTEN", listen.clone())]);
    let (http, base) = client_once_ready(&listen).await;

    let mut handles = Vec::new();
    for i in 0..6 {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        let key_type = if i % 2 == 0 { "rsa2048" } else { "p256v1" };
        handles.push(tokio::spawn(async move {
            let body = with(
                with(example_body(), "key_type", json!(key_type)),
                "sans",
                json!([format!("host{i}.example.com")]),
            );
            let resp = http
                .post(format!("{base}/client/v4/zones/{ZONE_A}/custom_csrs"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            let v: serde_json::Value = resp.json().await.unwrap();
            let csr = parse_csr(v["result"]["csr"].as_str().unwrap());
            assert_eq!(csr.key_type, key_type);
            assert_eq!(csr.sans, vec![format!("host{i}.example.com")]);
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let rows = database::csr_rows_at(&iso.database_url).await;
    assert_eq!(rows, 6);
}

#[tokio::test]
async fn ingress_and_worker_refuse_to_start_without_keks() {
    let iso = Isolation::new().await;
    for role in ["ingress", "worker"] {
        let mut cmd = Command::new(CSRD);
        cmd.arg(role);
        for (k, v) in iso.env().into_iter().filter(|(k, _)| *k != "CSRD_KEKS") {
            cmd.env(k, v);
        }
        let out = cmd.env_remove("CSRD_KEKS").output().unwrap();
        assert!(!out.status.success(), "{role} must refuse to start");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("CSRD_KEKS"),
            "{role} says why"
        );
    }
}

#[tokio::test]
async fn kek_generate_prints_a_usable_entry() {
    let out = Command::new(CSRD)
        .args(["kek", "generate", "--id", "prod-1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let entry = String::from_utf8(out.stdout).unwrap();
    let ring = csrd::crypto::Keyring::parse(entry.trim()).unwrap();
    assert_eq!(ring.active().id().as_str(), "prod-1");
}

#[tokio::test]
async fn user_create_prints_a_key_that_works_with_the_legacy_headers() {
    let app = spawn_app().await;
    let key = run_ok(
        CSRD,
        &app.iso,
        &user_create_args("Ops@Example.com", ACCOUNT_A),
    );
    assert_eq!(key.len(), 37);
    let resp = app
        .create(
            "accounts",
            ACCOUNT_A,
            Auth::Legacy("ops@example.com", &key),
            &p256_body(),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    // A read token made by the CLI cannot create.
    let out = run(&app.iso, &token_create_args(ACCOUNT_A, "read", &[]));
    let read = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    app.create("accounts", ACCOUNT_A, Auth::Bearer(&read), &example_body())
        .await
        .assert_failure(403, 10000);
}

#[tokio::test]
async fn sigterm_lets_accepted_creates_finish_then_exits_cleanly() {
    let iso = Isolation::new().await;
    let port = free_port();
    let listen = format!("127.0.0.1:{port}");
    let token_out = {
        let migrate = run(&iso, &["migrate"]);
        assert!(migrate.status.success());
        run(&iso, &token_create_args(ACCOUNT_A, "write", &[]))
    };
    let token = String::from_utf8(token_out.stdout)
        .unwrap()
        .trim()
        .to_owned();
    let mut serve = spawn(
        &iso,
        &["serve"],
        &[
            ("CSRD_LISTEN", listen.clone()),
            ("CSRD_WORKERS", "1".into()),
        ],
    );
    let (http, base) = client_once_ready(&listen).await;

    let mut requests = Vec::new();
    for i in 0..6 {
        let (http, base, token) = (http.clone(), base.clone(), token.clone());
        requests.push(tokio::spawn(async move {
            let body = with(
                example_body(),
                "sans",
                json!([format!("drain{i}.example.com")]),
            );
            let resp = http
                .post(format!("{base}/client/v4/accounts/{ACCOUNT_A}/custom_csrs"))
                .bearer_auth(&token)
                .header("Idempotency-Key", format!("drain-{i}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            resp.status().as_u16()
        }));
    }
    // A request is accepted once its Idempotency-Key is claimed; RSA keys on one keygen slot
    // take a while, so most are still in flight when SIGTERM lands.
    let pool = csrd::db::build_pool(&iso.database_url, 1, "csrd-tests").unwrap();
    eventually("all six creates to be accepted", || async {
        let client = pool.get().await.unwrap();
        let claimed: i64 = client
            .query_one("SELECT count(*) FROM idempotency_keys", &[])
            .await
            .unwrap()
            .get(0);
        (claimed == 6).then_some(())
    })
    .await;
    let pid = serve.0.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    for r in requests {
        assert_eq!(
            r.await.unwrap(),
            201,
            "an accepted create is answered, not dropped"
        );
    }
    let status = tokio::task::spawn_blocking(move || serve.0.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(
        status.success(),
        "csrd exits cleanly after draining: {status:?}"
    );
    let rows = database::csr_rows_at(&iso.database_url).await;
    assert_eq!(rows, 6);
}

#[tokio::test]
async fn an_operator_command_on_an_unmigrated_database_says_to_migrate() {
    let iso = Isolation::new().await;
    let out = run(&iso, &["token", "list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("is not migrated: run `csrd migrate`"),
        "{stderr}"
    );
    assert!(!stderr.contains("does not exist"), "{stderr}");
}

#[tokio::test]
async fn a_taken_port_is_reported_before_connecting_to_anything() {
    let iso = Isolation::new().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    // Nothing listens on port 1: were the port bound after connecting, this would be a
    // Postgres connection error (after its retries), not the port's.
    let out = csrd_command(CSRD, &iso, &["serve"])
        .env("CSRD_LISTEN", format!("127.0.0.1:{port}"))
        .env("CSRD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("DATABASE_URL", "postgres://postgres@127.0.0.1:1/none")
        .output()
        .expect("csrd binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("binding 127.0.0.1:{port} (CSRD_LISTEN)")),
        "{stderr}"
    );
    assert!(!stderr.to_lowercase().contains("postgres"), "{stderr}");
    drop(taken);
}

#[tokio::test]
async fn bench_create_with_nothing_listening_or_no_url_fails_with_a_reason() {
    let port = free_port();
    let out = Command::new(CSRD)
        .args(["bench", "create", "--token", "t", "--account", ACCOUNT_A])
        .args(["--base-url", &format!("http://127.0.0.1:{port}")])
        .env_remove("CSRD_BASE_URL")
        .output()
        .expect("csrd binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("nothing answers at"), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("created"));

    let no_url = Command::new(CSRD)
        .args(["bench", "create", "--token", "t", "--account", ACCOUNT_A])
        .env_remove("CSRD_BASE_URL")
        .output()
        .expect("csrd binary runs");
    assert!(!no_url.status.success());
    assert!(String::from_utf8_lossy(&no_url.stderr).contains("--base-url"));
}

#[tokio::test]
async fn serve_says_on_start_where_the_api_is_the_development_kek_and_how_to_make_a_token() {
    let iso = Isolation::new().await;
    assert!(run(&iso, &["migrate"]).status.success());
    let dir = std::env::temp_dir().join(format!("csrd-serve-start-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&dir).unwrap();
    let log = dir.join("serve.log");
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = csrd_command(CSRD, &iso, &["serve"]);
    cmd.env_remove("CSRD_KEKS")
        .env("CSRD_DEV_KEK_FILE", dir.join("dev-kek"))
        .env("CSRD_LISTEN", &listen)
        .env("CSRD_ADMIN_LISTEN", "127.0.0.1:0")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let serve = Proc(cmd.spawn().expect("csrd binary runs"));
    client_once_ready(&listen).await;
    let said = eventually("serve to say it is ready", || async {
        let said = std::fs::read_to_string(&log).unwrap_or_default();
        said.contains("csrd is ready").then_some(said)
    })
    .await;
    drop(serve);
    let _ = std::fs::remove_dir_all(&dir);
    for expected in [
        format!("http://{listen}/client/v4"),
        "/metrics".to_owned(),
        "csrd token create --account".to_owned(),
        dir.join("dev-kek").display().to_string(),
        "DEVELOPMENT key-encryption key".to_owned(),
    ] {
        assert!(said.contains(&expected), "no {expected:?} in: {said}");
    }
}
