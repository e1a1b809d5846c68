//! Custom certificates under hostile input: links that cannot be verified, certificates that
//! share a serial, caps on what a tenant stores, chains that would cost more to verify than a
//! request may, padded and oversized bulk bodies, and the memory and database connections
//! large uploads may hold.

use std::time::Duration;

use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use csrd_test_support::ca::{p384_key, patched_pem};
use csrd_test_support::process::run_ok;
use csrd_test_support::*;

const CERTS_A: &str = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/custom_certificates";

async fn new_csr(app: &TestApp, token: &str, name: &str) -> Value {
    let body = with(p256_body(), "sans", json!([name]));
    let body = with(body, "common_name", json!(name));
    let resp = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(token), &body)
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.body["result"].clone()
}

async fn csrs(app: &TestApp, token: &str, n: usize) -> Vec<Value> {
    let mut all = Vec::new();
    for i in 0..n {
        all.push(new_csr(app, token, &format!("c{i}.example.org")).await);
    }
    all
}

fn pem(csr: &Value) -> &str {
    csr["csr"].as_str().unwrap()
}

async fn upload(app: &TestApp, token: &str, csr: &Value, chain: &str) -> Response {
    app.send(
        Method::POST,
        CERTS_A,
        Auth::Bearer(token),
        Some(json!({"certificate": chain, "custom_csr_id": csr["id"]}).to_string()),
    )
    .await
}

async fn bulk(app: &TestApp, token: &str, items: Vec<Value>) -> RawResponse {
    app.request(Method::POST, &format!("{CERTS_A}/bulk"))
        .bearer(token)
        .json(&json!({ "items": items }))
        .send()
        .await
}

#[tokio::test]
async fn a_link_csrd_cannot_verify_is_refused_not_passed_by_name() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let ca = TestCa::new();
    let leaf = ca.sign_between(pem(&csr), 2024, 2090);
    // ecdsa-with-SHA256 relabelled ecdsa-with-SHA512 (no verifier for it), in both places:
    // the signature is now garbage for an algorithm csrd does not verify.
    let relabelled = patched_pem(
        &leaf,
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02],
        &[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x04],
    );
    // An ECDSA leaf followed by an impostor CA of the same name holding an RSA key.
    let rsa_impostor = TestCa::rsa("csrd test CA root");
    for (what, chain) in [
        ("unknown algorithm", format!("{relabelled}{}", ca.pem)),
        (
            "ECDSA signature, RSA CA",
            format!("{leaf}{}", rsa_impostor.pem),
        ),
    ] {
        let resp = upload(&app, &token, &csr, &chain).await;
        resp.assert_failure(400, 1445);
        assert!(
            resp.body["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains("cannot be verified"),
            "{what}: {}",
            resp.body
        );
    }
    // The real chain, from an RSA CA too, is taken.
    let rsa_ca = TestCa::rsa("an RSA CA");
    let chain = format!(
        "{}{}",
        rsa_ca.sign_between(pem(&csr), 2024, 2090),
        rsa_ca.pem
    );
    assert_eq!(upload(&app, &token, &csr, &chain).await.status, 200);
}

#[tokio::test]
async fn a_different_certificate_with_the_same_serial_and_issuer_is_another_certificate() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let ca = TestCa::new();
    let serial = vec![0x01, 0x02, 0x03];
    let first = ca.sign_serial_between(pem(&csr), serial.clone(), 2024, 2080);
    let second = ca.sign_serial_between(pem(&csr), serial, 2024, 2090);
    let item = |leaf: &str| json!({"certificate": format!("{leaf}{}", ca.pem), "custom_csr_id": csr["id"]});

    let one = bulk(&app, &token, vec![item(&first)]).await;
    assert_eq!(one.status, 200, "{}", one.json());
    let two = bulk(&app, &token, vec![item(&second)]).await;
    assert_eq!(two.status, 200, "{}", two.json());
    let (id1, id2) = (
        one.json()["result"][0]["id"].clone(),
        two.json()["result"][0]["id"].clone(),
    );
    assert_ne!(
        id1, id2,
        "the second certificate is stored, not taken for the first"
    );
    let got = app
        .send(
            Method::GET,
            &format!("{CERTS_A}/{}", id2.as_str().unwrap()),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert!(
        got.body["result"]["expires_on"]
            .as_str()
            .unwrap()
            .starts_with("2090"),
        "{}",
        got.body
    );
    assert_eq!(got.body["result"]["serial_number"], "66051");
    // The same bytes again are the same certificate: the bulk route answers its id, a single
    // upload 1220.
    let again = bulk(&app, &token, vec![item(&second), item(&second)]).await;
    assert_eq!(again.json()["result"][0]["id"], id2);
    assert_eq!(again.json()["result"][1]["id"], id2);
    let single = upload(&app, &token, &csr, &format!("{second}{}", ca.pem)).await;
    single.assert_failure(400, 1220);
    let listed = app
        .send(Method::GET, CERTS_A, Auth::Bearer(&token), None)
        .await;
    assert_eq!(listed.body["result_info"]["total_count"], 2);
}

#[tokio::test]
async fn certificates_per_csr_and_bytes_per_tenant_are_capped_and_overridable() {
    let app = spawn_in_memory_with(|s| s.tenants.tenant_certificates_per_csr = 2).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let ca = TestCa::new();
    let chain = || ca.sign(pem(&csr));
    let kept = upload(&app, &token, &csr, &chain()).await;
    assert_eq!(kept.status, 200);
    assert_eq!(upload(&app, &token, &csr, &chain()).await.status, 200);
    let third = upload(&app, &token, &csr, &chain()).await;
    third.assert_failure(400, 1447);
    assert_eq!(
        third.body["errors"][0]["source"]["pointer"],
        "/custom_csr_id"
    );
    let in_bulk = bulk(
        &app,
        &token,
        vec![json!({"certificate": chain(), "custom_csr_id": csr["id"]})],
    )
    .await;
    in_bulk.assert_failure(400, 1447);
    assert_eq!(
        in_bulk.json()["errors"][0]["source"]["pointer"],
        "/items/0/custom_csr_id"
    );
    // Deleting one makes room again.
    let id = kept.body["result"]["id"].as_str().unwrap();
    let deleted = app
        .send(
            Method::DELETE,
            &format!("{CERTS_A}/{id}"),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(upload(&app, &token, &csr, &chain()).await.status, 200);

    // What the tenant stores is counted on every path, as the migration counts it.
    let client = app.pool.get().await.unwrap();
    let row = client
        .query_one(
            "SELECT (SELECT bytes FROM tenant_certificate_usage),
                    (SELECT sum(csrd_certificate_bytes(certificate, hosts, policy))::bigint
                     FROM custom_certificates),
                    (SELECT bool_and(leaf_sha256 = csrd_leaf_sha256(certificate))
                     FROM custom_certificates)",
            &[],
        )
        .await
        .unwrap();
    let (usage, counted, digests): (i64, i64, bool) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(usage, counted);
    assert!(digests, "the migration's digest is csrd's");

    // An operator's override of the bytes, from the command line: nothing more fits.
    run_ok(
        env!("CARGO_BIN_EXE_csrd"),
        &app.iso,
        &[
            "tenant",
            "limits",
            "set",
            "--account",
            ACCOUNT_A,
            "--certificate-bytes",
            &usage.to_string(),
        ],
    );
    let refused = eventually("the override to apply", || async {
        // A CSR of its own each time: uploads that land before the override must not meet
        // the per-CSR cap instead.
        let other = new_csr(&app, &token, "b.example.org").await;
        let r = upload(&app, &token, &other, &ca.sign(pem(&other))).await;
        (r.status == 400).then_some(r)
    })
    .await;
    refused.assert_failure(400, 1447);
    assert!(
        refused.body["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("--certificate-bytes"),
        "{}",
        refused.body
    );
}

#[tokio::test]
async fn chains_that_would_cost_more_than_a_request_may_are_refused_before_they_are_checked() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csrs = csrs(&app, &token, 20).await;
    // Each leaf under nine P-384 CAs of its own: 9 links of 0.5 ms estimated per item (90 ms),
    // over the budget of 1 ms per item and 50 ms (70 ms).
    let own_chains: Vec<Value> = csrs
        .iter()
        .map(|csr| {
            let mut cas = vec![TestCa::named("root", p384_key())];
            for depth in 1..9 {
                let next = cas[depth - 1].issue_ca(&format!("ca {depth}"), p384_key());
                cas.push(next);
            }
            let mut chain = cas.last().unwrap().sign_between(pem(csr), 2024, 2090);
            for ca in cas.iter().rev() {
                chain.push_str(&ca.pem);
            }
            json!({"certificate": chain, "custom_csr_id": csr["id"]})
        })
        .collect();
    let refused = bulk(&app, &token, own_chains).await;
    refused.assert_failure(400, 1448);
    assert_eq!(refused.json()["errors"][0]["source"]["pointer"], "/items");
    // The same leaves under one shared chain of nine CAs: each shared link is checked once.
    let mut cas = vec![TestCa::named("root", p384_key())];
    for depth in 1..9 {
        let next = cas[depth - 1].issue_ca(&format!("ca {depth}"), p384_key());
        cas.push(next);
    }
    let shared: String = cas.iter().rev().map(|ca| ca.pem.as_str()).collect();
    let items: Vec<Value> = csrs
        .iter()
        .map(|csr| {
            let leaf = cas.last().unwrap().sign_between(pem(csr), 2024, 2090);
            json!({"certificate": format!("{leaf}{shared}"), "custom_csr_id": csr["id"]})
        })
        .collect();
    let stored = bulk(&app, &token, items).await;
    assert_eq!(stored.status, 200, "{}", stored.json());
}

#[tokio::test]
async fn a_padded_bulk_item_is_refused_at_its_item_without_being_read_into_a_tree() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let pad = vec!["0"; 500_000].join(",");
    let body = format!(
        r#"{{"items": [{{"custom_csr_id": "7b163417-1d2b-4c84-a38a-2fb7a0cd7752", "certificate": "x", "pad": [{pad}]}}]}}"#
    );
    let refused = app
        .request(Method::POST, &format!("{CERTS_A}/bulk"))
        .bearer(&token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    refused.assert_failure(400, 1400);
    let error = &refused.json()["errors"][0];
    assert_eq!(error["source"]["pointer"], "/items/0");
    assert!(
        error["message"].as_str().unwrap().contains("at most"),
        "{error}"
    );
}

#[tokio::test]
async fn a_bulk_upload_costs_one_request_per_mebibyte() {
    let app = spawn_in_memory_with(|s| {
        s.tenants.tenant_rate = 0.01;
        s.tenants.tenant_burst = 4.0;
    })
    .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    // An item padded with 2.5 MiB of whitespace: three requests' worth of the burst of four.
    let padded = format!(
        r#"{{"items": [{{"custom_csr_id": "7b163417-1d2b-4c84-a38a-2fb7a0cd7752", "certificate": "x"}}]{}}}"#,
        " ".repeat(2560 * 1024)
    );
    let send = || {
        app.request(Method::POST, &format!("{CERTS_A}/bulk"))
            .bearer(&token)
            .header("content-type", "application/json")
            .body(padded.clone())
            .send()
    };
    let first = send().await;
    assert_ne!(first.status, 429, "three of four: {}", first.json());
    // One left: the gate takes it, and the body's two more are refused.
    send().await.assert_failure(429, 971);
}

/// A request to `path` declaring `declared` bytes of body, of which only `sent` are sent;
/// the connection is kept open (returned) so the server keeps waiting for the rest.
async fn stalled_body(
    app: &TestApp,
    path: &str,
    token: &str,
    declared: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt as _;
    let mut stream = tokio::net::TcpStream::connect(app.addr()).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {declared}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut body = b"{\"items\": [".to_vec();
    body.resize(sent, b' ');
    stream.write_all(&body).await.unwrap();
    stream
}

#[tokio::test]
async fn slow_declared_bodies_hold_only_the_memory_they_have_sent() {
    let app = spawn_app_with(|s| s.tenants.batch_memory_mib = 64).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let batches_a = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/custom_csrs/batches";
    // Three bodies that declare 32 MiB each (96 MiB reserved each, had their declaration
    // been believed) and send a few bytes.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(stalled_body(&app, batches_a, &a, 32 << 20, 100).await);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let submitted = tokio::time::timeout(
        Duration::from_secs(10),
        app.submit_batch(ACCOUNT_B, &b, batch_items(10)),
    )
    .await
    .expect("B's submission was answered while A's bodies are still open");
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    drop(held);
}

#[tokio::test]
async fn a_tenant_that_fills_the_memory_budget_and_stalls_is_stopped_for_another() {
    let app = spawn_app_with(|s| s.tenants.batch_memory_mib = 12).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let batches_a = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/custom_csrs/batches";
    // Four MiB sent quickly (three times that reserved: the whole budget), the rest never.
    let mut stalled = stalled_body(&app, batches_a, &a, 8 << 20, 4_150_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let submitted = tokio::time::timeout(
        Duration::from_secs(10),
        app.submit_batch(ACCOUNT_B, &b, batch_items(10)),
    )
    .await
    .expect("B was let in before A's body timed out");
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    let answer = read_answer(&mut stalled).await;
    assert!(answer.starts_with("HTTP/1.1 429"), "{answer}");
}

async fn read_answer(stream: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn the_certificate_routes_share_of_the_pool_leaves_the_rest_to_others_and_goes_round_tenants()
{
    use csrd::domain::{Owner, OwnerKind};
    use csrd::ingress::db_share::{DbShare, ShareError};
    let app = spawn_in_memory().await;
    let pool = csrd::db::build_pool(&app.iso.database_url, 4, "csrd-tests").unwrap();
    let share = DbShare::new(pool.clone(), 2);
    let (a, b) = (
        Owner::parse(OwnerKind::Account, ACCOUNT_A).unwrap(),
        Owner::parse(OwnerKind::Account, ACCOUNT_B).unwrap(),
    );
    let first = share.get(&a).await.unwrap();
    let _second = share.get(&a).await.unwrap();
    // A floods: its next asks wait; then B asks, and gets the first place given back.
    let (tx, mut order) = tokio::sync::mpsc::unbounded_channel();
    for (owner, name) in [(&a, 'a'), (&a, 'a'), (&a, 'a'), (&b, 'b')] {
        let (share, owner, tx) = (share.clone(), owner.clone(), tx.clone());
        tokio::spawn(async move {
            let held = share.get(&owner).await;
            tx.send((name, held.is_ok())).unwrap();
            tokio::time::sleep(Duration::from_millis(50)).await;
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        order.try_recv().is_err(),
        "they wait for a place in the share"
    );
    let others = pool.get().await.expect("the rest of the pool is free");
    drop(others);
    drop(first);
    let (who, ok) = tokio::time::timeout(Duration::from_secs(5), order.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (who, ok),
        ('b', true),
        "B, holding nothing, goes before A's backlog"
    );
    // A place not had within the wait is 429 (busy), not a 5xx.
    let busy = DbShare::new(pool.clone(), 1);
    let _held = busy.get(&a).await.unwrap();
    let waited = tokio::time::timeout(Duration::from_secs(10), busy.get(&b))
        .await
        .unwrap();
    assert!(matches!(waited, Err(ShareError::Busy(_))));
}

#[tokio::test]
async fn csrd_batch_holds_back_every_key_format_and_fails_an_oversized_file_alone() {
    use base64::Engine as _;
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let ca = TestCa::new();
    let csrs = csrs(&app, &token, 2).await;
    let key = csrd::crypto::generate_key(csrd::domain::KeyType::P256v1).unwrap();
    let b64 = base64::engine::general_purpose::STANDARD.encode(key.pkcs8_der.expose());
    let bare_pkcs8: String = b64
        .as_bytes()
        .chunks(64)
        .map(|l| format!("{}\n", std::str::from_utf8(l).unwrap()))
        .collect();
    let keys = [
        ("PGP", "-----BEGIN PGP PRIVATE KEY BLOCK-----\n\nlQOYBGSECRET\n-----END PGP PRIVATE KEY BLOCK-----\n".to_owned()),
        ("PuTTY", "PuTTY-User-Key-File-3: ssh-ed25519\nEncryption: none\nComment: x\nPublic-Lines: 1\nAAAA\nPrivate-Lines: 1\nSECRET\n".to_owned()),
        ("bare PKCS#8", bare_pkcs8),
    ];
    let dir = std::env::temp_dir().join(format!("csrd-keys-{}", uuid::Uuid::new_v4().simple()));
    let pems = dir.join("pems");
    std::fs::create_dir_all(&pems).unwrap();
    // One good chain, one oversized file (its name sorts first), and the key files.
    let id = |csr: &Value| csr["id"].as_str().unwrap().to_owned();
    std::fs::write(
        pems.join(format!("{}.pem", id(&csrs[0]))),
        ca.sign(pem(&csrs[0])),
    )
    .unwrap();
    std::fs::write(
        pems.join("00000000-0000-0000-0000-000000000000.pem"),
        "A".repeat(1 << 20),
    )
    .unwrap();
    let mut jsonl = String::new();
    for (i, (_, text)) in keys.iter().enumerate() {
        std::fs::write(pems.join(format!("{}-key{i}.pem", id(&csrs[1]))), text).unwrap();
        jsonl.push_str(&format!(
            "{}\n",
            json!({"custom_csr_id": csrs[1]["id"], "certificate": text})
        ));
    }
    let input = dir.join("keys.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let run = |source: std::path::PathBuf, output: std::path::PathBuf| {
        let (url, bearer) = (format!("http://{}", app.addr()), token.clone());
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_csrd"))
                .args([
                    "batch",
                    "--url",
                    &url,
                    "--account",
                    ACCOUNT_A,
                    "--certificates",
                ])
                .arg(&source)
                .arg("--output")
                .arg(&output)
                .env("CSRD_TOKEN", &bearer)
                .env("RUST_LOG", "warn")
                .output()
                .unwrap()
        })
    };
    let dir_out = dir.join("dir-out.jsonl");
    let out = run(pems.clone(), dir_out.clone()).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "1 created, 4 failed",
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results = std::fs::read_to_string(&dir_out).unwrap();
    assert!(
        results.contains("larger than a certificate chain may be"),
        "{results}"
    );
    assert_eq!(
        results
            .matches("holds private key material; not sent")
            .count(),
        3,
        "{results}"
    );
    let jsonl_out = dir.join("jsonl-out.jsonl");
    let out = run(input, jsonl_out.clone()).await.unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0 created, 3 failed"
    );
    let results = std::fs::read_to_string(&jsonl_out).unwrap();
    assert_eq!(
        results
            .matches("holds private key material; not sent")
            .count(),
        3,
        "{results}"
    );
    assert!(!results.contains("SECRET"), "{results}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn single_bodies_sent_slowly_hold_the_memory_budget_and_are_stopped_for_another_tenant() {
    let app = spawn_app_with(|s| s.tenants.body_memory_mib = 1).await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let creates_a = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/custom_csrs";
    // Twenty create bodies declaring 1 MiB, 60 KB of each sent: 64 KiB reserved each, the
    // 1 MiB budget full after sixteen; then they stall.
    let mut stalled = Vec::new();
    for _ in 0..20 {
        stalled.push(stalled_body(&app, creates_a, &a, 1 << 20, 60_000).await);
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let created = tokio::time::timeout(
        Duration::from_secs(10),
        app.create("accounts", ACCOUNT_B, Auth::Bearer(&b), &p256_body()),
    )
    .await
    .expect("B's create was read while A's bodies still stall");
    assert_eq!(created.status, 201, "{}", created.body);
    let mut stopped = 0;
    for s in &mut stalled {
        if let Ok(answer) = tokio::time::timeout(Duration::from_millis(100), read_answer(s)).await
            && answer.starts_with("HTTP/1.1 429")
        {
            stopped += 1;
        }
    }
    assert!(
        stopped >= 1,
        "a stalled body of A's was stopped to make room"
    );
}

#[tokio::test]
async fn dripping_bodies_from_many_zones_leave_room_for_another_tenants_batch() {
    let app = spawn_app().await;
    let zones: Vec<String> = (0..10).map(|i| format!("{i:032x}")).collect();
    let zone_refs: Vec<&str> = zones.iter().map(String::as_str).collect();
    let a = app.token(&[], &zone_refs, Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    // Eight submissions per zone (each zone's cap), each declaring 32 MiB and sending a byte.
    let mut held = Vec::new();
    for zone in &zones {
        let path = format!("/client/v4/zones/{zone}/custom_certificates/bulk");
        for _ in 0..8 {
            held.push(stalled_body(&app, &path, &a, 32 << 20, 1).await);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A 12 MiB batch (ten items and padding): 36 MiB reserved as it arrives.
    let padded = format!(
        "{{\"items\": {}{}}}",
        json!(batch_items(10)),
        " ".repeat(12 << 20)
    );
    let submitted = app
        .request(
            Method::POST,
            "/client/v4/accounts/b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0/custom_csrs/batches",
        )
        .bearer(&b)
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await;
    assert_eq!(submitted.status, 202, "{}", submitted.json());
    drop(held);
}

#[tokio::test]
async fn key_material_in_a_policy_is_refused_as_in_a_certificate() {
    use base64::Engine as _;
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let key = csrd::crypto::generate_key(csrd::domain::KeyType::P256v1).unwrap();
    let bare = base64::engine::general_purpose::STANDARD.encode(key.pkcs8_der.expose());
    for policy in [bare.as_str(), "PuTTY-User-Key-File-3: ssh-ed25519"] {
        let resp = app
            .send(
                Method::POST,
                CERTS_A,
                Auth::Bearer(&token),
                Some(
                    json!({"certificate": TestCa::new().sign(pem(&csr)), "custom_csr_id": csr["id"], "policy": policy})
                        .to_string(),
                ),
            )
            .await;
        resp.assert_failure(400, 1440);
        assert!(!resp.body.to_string().contains(&bare[10..40]), "echoed");
    }
}

#[tokio::test]
async fn concurrent_edits_of_one_certificate_all_get_answers_none_a_5xx() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let chain = TestCa::new().sign(pem(&csr));
    let stored = upload(&app, &token, &csr, &chain).await;
    assert_eq!(stored.status, 200);
    let id = stored.body["result"]["id"].as_str().unwrap().to_owned();
    let path = format!("{CERTS_A}/{id}");
    let edits = (0..16).map(|i| {
        let body = if i % 2 == 0 {
            json!({"certificate": chain})
        } else {
            json!({"custom_csr_id": csr["id"]})
        };
        let (app, token, path) = (&app, &token, &path);
        async move {
            app.send(
                Method::PATCH,
                path,
                Auth::Bearer(token),
                Some(body.to_string()),
            )
            .await
            .status
        }
    });
    let statuses = futures_util::future::join_all(edits).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn an_edit_in_place_is_not_refused_for_a_per_csr_cap_lowered_since() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let ca = TestCa::new();
    let first = upload(&app, &token, &csr, &ca.sign(pem(&csr))).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        upload(&app, &token, &csr, &ca.sign(pem(&csr))).await.status,
        200
    );
    run_ok(
        env!("CARGO_BIN_EXE_csrd"),
        &app.iso,
        &[
            "tenant",
            "limits",
            "set",
            "--account",
            ACCOUNT_A,
            "--certificates-per-csr",
            "1",
        ],
    );
    let id = first.body["result"]["id"].as_str().unwrap();
    let refused = eventually("the lowered cap to apply", || async {
        let r = upload(&app, &token, &csr, &ca.sign(pem(&csr))).await;
        (r.status == 400).then_some(r)
    })
    .await;
    refused.assert_failure(400, 1447);
    for body in [
        json!({"bundle_method": "force"}),
        json!({"certificate": ca.sign(pem(&csr))}),
    ] {
        let edited = app
            .send(
                Method::PATCH,
                &format!("{CERTS_A}/{id}"),
                Auth::Bearer(&token),
                Some(body.to_string()),
            )
            .await;
        assert_eq!(edited.status, 200, "{}", edited.body);
    }
}

#[tokio::test]
async fn what_a_bulk_upload_parses_into_is_held_within_the_memory_budget() {
    let app = spawn_in_memory_with(|s| s.tenants.batch_memory_mib = 16).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let csr = new_csr(&app, &token, "a.example.org").await;
    let ca = TestCa::new();
    // A leaf of a thousand short names: a few bytes of body each, a string of its own each
    // once parsed. 400 of them are a 4 MB body (12 MB charged) that parses into 27 MB.
    let names: Vec<String> = (0..1000).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let wide = ca.sign_names(pem(&csr), &names);
    let narrow = ca.sign_names(pem(&csr), &["a.example.org", "www.a.example.org"]);
    let items = |chain: &str| {
        (0..400)
            .map(|_| json!({"custom_csr_id": csr["id"], "certificate": chain}))
            .collect::<Vec<_>>()
    };
    // More than the whole budget once parsed: it can never fit, and says so (not "retry").
    let never = bulk(&app, &token, items(&wide)).await;
    never.assert_failure(400, 1400);
    assert_eq!(never.json()["errors"][0]["source"]["pointer"], "/items");
    let fits = bulk(&app, &token, items(&narrow)).await;
    assert_eq!(fits.status, 200, "{}", fits.json());
}

#[tokio::test]
async fn two_bulk_uploads_that_each_need_more_memory_do_not_wait_for_each_other() {
    // 12 MiB: room for one of these uploads' parsed chains at a time, not for two.
    let app = spawn_in_memory_with(|s| s.tenants.batch_memory_mib = 12).await;
    let token = app
        .token(&[ACCOUNT_A, ACCOUNT_B], &[], Permission::Write)
        .await;
    let ca = TestCa::new();
    let names: Vec<String> = (0..1000).map(|i| format!("h{i}")).collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut bodies = Vec::new();
    for account in [ACCOUNT_A, ACCOUNT_B] {
        let body = with(p256_body(), "sans", json!(["a.example.org"]));
        let resp = app
            .create("accounts", account, Auth::Bearer(&token), &body)
            .await;
        assert_eq!(resp.status, 201, "{}", resp.body);
        let csr = resp.body["result"].clone();
        let wide = ca.sign_names(pem(&csr), &names);
        let items: Vec<Value> = (0..100)
            .map(|_| json!({"custom_csr_id": csr["id"], "certificate": wide}))
            .collect();
        bodies.push((account, json!({ "items": items }).to_string()));
    }
    let send = |(account, body): &(&str, String)| {
        app.request(
            Method::POST,
            &format!("/client/v4/accounts/{account}/custom_certificates/bulk"),
        )
        .bearer(&token)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
    };
    let (a, b) = tokio::join!(send(&bodies[0]), send(&bodies[1]));
    let statuses = [a.status, b.status];
    // Each holding its body's memory and waiting for the other's was how both ended 429
    // after the 30 s wait; both refused at once when their parses interleaved was the next
    // way. Now one of them may wait for room while it holds some, the other is refused at
    // once (or finds room first), and the one waiting gets what that gives back.
    assert!(
        statuses.contains(&200),
        "{statuses:?}: {} / {}",
        a.json(),
        b.json()
    );
    for r in [&a, &b] {
        assert!(r.status == 200 || r.status == 429, "{}", r.json());
    }
}
