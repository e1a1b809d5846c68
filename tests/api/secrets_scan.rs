//! One run of the real processes (`csrd ingress` and `csrd worker`, `RUST_LOG=trace`), then a
//! scan of everything they left behind — a `pg_dump`, their whole log output, and copies of
//! every job and completion message — for the private keys' bytes, the KEK and the API
//! credentials. Zero hits.

use std::process::Stdio;

use base64::Engine;
use csrd::crypto::open;
use csrd::db::csrs;
use csrd::domain::{CsrId, Owner, OwnerKind};
use futures_util::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use serde_json::json;

use csrd_test_support::process::{
    Proc, csrd_command, free_port, run_ok, user_create_args, wait_ready, write_token_for,
};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

/// `csrd args…` at `RUST_LOG=trace`, its stderr (the log) into `log`.
fn spawn(iso: &Isolation, args: &[&str], extra: &[(&str, String)], log: &std::path::Path) -> Proc {
    let mut cmd = csrd_command(CSRD, iso, args);
    cmd.stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .envs(extra.iter().map(|(k, v)| (*k, v.clone())))
        .env("RUST_LOG", "trace");
    Proc(cmd.spawn().expect("csrd binary runs"))
}

/// An exclusive queue on `ch` receiving a copy of what `exchange` routes with `key`.
async fn tap(ch: &lapin::Channel, exchange: &str, key: &str) -> lapin::Consumer {
    let q = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .unwrap();
    ch.queue_bind(
        q.name().clone(),
        exchange.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    ch.basic_consume(
        q.name().clone(),
        "".into(),
        BasicConsumeOptions {
            no_ack: true,
            ..Default::default()
        },
        FieldTable::default(),
    )
    .await
    .unwrap()
}

/// Bodies received so far (waiting up to a second for each next one).
async fn drain(consumer: &mut lapin::Consumer) -> Vec<String> {
    let mut bodies = Vec::new();
    while let Ok(Some(Ok(d))) =
        tokio::time::timeout(std::time::Duration::from_secs(1), consumer.next()).await
    {
        bodies.push(String::from_utf8_lossy(&d.data).into_owned());
    }
    bodies
}

#[tokio::test]
async fn no_key_bytes_kek_or_credential_in_the_database_the_logs_or_the_messages() {
    let iso = Isolation::new().await;
    run_ok(CSRD, &iso, &["migrate"]);
    let token = write_token_for(CSRD, &iso, ACCOUNT_A);
    let legacy_key = run_ok(CSRD, &iso, &user_create_args("ops@example.com", ACCOUNT_A));
    let dir = tempfile_dir();
    let (ingress_log, worker_log) = (dir.join("ingress.log"), dir.join("worker.log"));

    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let _ingress = spawn(
        &iso,
        &["ingress"],
        &[("CSRD_LISTEN", format!("127.0.0.1:{port}"))],
        &ingress_log,
    );
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    // Copies of every job chunk and of every completion event for this ingress.
    let topology = iso.topology();
    let (_conn, ch) = broker::channel("csrd-tests-tap").await;
    let mut jobs = tap(
        &ch,
        &topology.jobs_exchange(),
        csrd::amqp::topology::CREATE_ROUTING_KEY,
    )
    .await;
    let listed = services::rabbitmqctl(&["-q", "list_queues", "name"]);
    let events_prefix = format!("{}.events.", iso.prefix);
    let instance = String::from_utf8_lossy(&listed.stdout)
        .lines()
        .find_map(|q| q.strip_prefix(&events_prefix).map(str::to_owned))
        .expect("the ingress's event queue");
    let mut events = tap(&ch, &topology.events_exchange(), &instance).await;

    let _worker = spawn(&iso, &["worker"], &[], &worker_log);
    let url = format!("{base}/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    for (key_type, legacy) in [("rsa2048", false), ("p256v1", false), ("p256v1", true)] {
        let mut req = http
            .post(&url)
            .json(&with(example_body(), "key_type", json!(key_type)));
        req = if legacy {
            req.header("X-Auth-Email", "ops@example.com")
                .header("X-Auth-Key", &legacy_key)
        } else {
            req.bearer_auth(&token)
        };
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 201);
    }
    let mut bodies = drain(&mut jobs).await;
    let event_bodies = drain(&mut events).await;
    assert!(
        bodies.len() >= 3 && !event_bodies.is_empty(),
        "the taps saw the run"
    );
    bodies.extend(event_bodies);
    drop(_worker);
    drop(_ingress);

    // The secrets: every key's DER (in 24-byte windows, hex and base64), the KEK, the
    // credentials.
    let pool = csrd::db::build_pool(&iso.database_url, 1, "csrd-tests").unwrap();
    let client = pool.get().await.unwrap();
    let keyring = csrd::crypto::Keyring::parse(&iso.keks).unwrap();
    let owner = Owner::parse(OwnerKind::Account, ACCOUNT_A).unwrap();
    let ids: Vec<uuid::Uuid> = database::column(&client, "SELECT id FROM custom_csrs").await;
    assert_eq!(ids.len(), 3);
    let mut needles = vec![
        token.clone(),
        token[8..].to_owned(),
        legacy_key.clone(),
        iso.keks.split_once(':').unwrap().1.to_owned(),
    ];
    for id in ids {
        let id = CsrId(id);
        let sealed = csrs::get_sealed_key(&**client, &owner, id)
            .await
            .unwrap()
            .unwrap();
        let der = open(&keyring, id, &owner, &sealed).unwrap();
        for window in der.expose().chunks(24).filter(|c| c.len() == 24) {
            needles.push(hex::encode(window));
        }
        let b64 = base64::engine::general_purpose::STANDARD.encode(der.expose());
        needles.push(b64[8..72].to_owned());
    }

    let logs = std::fs::read_to_string(&ingress_log).unwrap()
        + &std::fs::read_to_string(&worker_log).unwrap();
    assert!(logs.contains("TRACE"), "the logs are at trace level");
    let corpora = [
        ("pg_dump", pg_dump(&iso.database_url)),
        ("logs", logs),
        ("messages", bodies.join("\n")),
    ];
    for (what, text) in &corpora {
        let text = text.to_lowercase();
        for needle in &needles {
            assert!(
                !text.contains(&needle.to_lowercase()),
                "a secret found in the {what}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("csrd-scan-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
