//! Key delivery: CSRs created deliverable, recipients a tenant enrolls and only an operator
//! approves, and the deliveries a recipient receives (sealed to it, for certificates its
//! hosts cover, each audited). The agent that installs them is `agent.rs`.

use csrd::auth::Permission;
use csrd::crypto::seal::open_armored;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

use csrd_test_support::process::run_ok;
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

fn sealed(name: &str, key_type: &str) -> Value {
    let body = with(named_body(name), "key_type", json!(key_type));
    with(body, "key_delivery", json!("sealed"))
}

async fn create(app: &TestApp, token: &str, body: Value) -> Value {
    let resp = app
        .create("zones", ZONE_A, Auth::Bearer(token), &body)
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.body["result"].clone()
}

/// Signs `csr` for its SANs (or `names`) and uploads it; the certificate's result.
async fn certify(app: &TestApp, token: &str, ca: &TestCa, csr: &Value, names: &[&str]) -> Value {
    let pem = csr["csr"].as_str().unwrap();
    let chain = if names.is_empty() {
        ca.sign(pem)
    } else {
        ca.sign_names(pem, names)
    };
    let resp = app
        .send(
            Method::POST,
            &format!("/client/v4/zones/{ZONE_A}/custom_certificates"),
            Auth::Bearer(token),
            Some(json!({"certificate": chain, "custom_csr_id": csr["id"]}).to_string()),
        )
        .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    resp.body["result"].clone()
}

fn recipients(rest: &str) -> String {
    format!("/client/v4/zones/{ZONE_A}/key_recipients{rest}")
}

struct Enrolled {
    id: String,
    fingerprint: String,
    identity: age::x25519::Identity,
}

async fn enroll(app: &TestApp, token: &str, hosts: Value) -> Enrolled {
    let (secret, recipient) = csrd::crypto::seal::new_identity();
    let resp = app
        .send(
            Method::POST,
            &recipients(""),
            Auth::Bearer(token),
            Some(json!({"name": "web-1", "recipient": recipient, "hosts": hosts}).to_string()),
        )
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let r = &resp.body["result"];
    assert_eq!(r["status"], "pending");
    assert_eq!(r["recipient"], recipient.as_str());
    let fingerprint = hex::encode(sha2::Sha256::digest(recipient.as_bytes()));
    assert_eq!(r["fingerprint"], fingerprint.as_str());
    Enrolled {
        id: r["id"].as_str().unwrap().to_owned(),
        fingerprint,
        identity: secret.parse().unwrap(),
    }
}

fn approve(app: &TestApp, r: &Enrolled) -> String {
    run_ok(
        CSRD,
        &app.iso,
        &[
            "recipient",
            "approve",
            &r.id,
            "--fingerprint",
            &r.fingerprint,
        ],
    )
}

async fn deliveries(app: &TestApp, token: &str, id: &str, query: &str) -> Response {
    app.send(
        Method::GET,
        &recipients(&format!("/{id}/deliveries{query}")),
        Auth::Bearer(token),
        None,
    )
    .await
}

async fn audit_actions(app: &TestApp, action: &str) -> Vec<Value> {
    let client = app.pool.get().await.unwrap();
    client
        .query(
            "SELECT coalesce(detail, 'null'::jsonb) FROM audit_log WHERE action = $1 ORDER BY id",
            &[&action],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

#[tokio::test]
async fn an_approved_recipient_receives_each_sealed_key_its_hosts_cover_and_nothing_else() {
    let app = spawn_in_memory().await;
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let ca = TestCa::new();
    let p256 = create(&app, &write, sealed("shop.example.com", "p256v1")).await;
    let rsa = create(&app, &write, sealed("www.example.com", "rsa2048")).await;
    let plain = create(&app, &write, named_body("plain.example.com")).await;
    let elsewhere = create(&app, &write, sealed("shop.example.org", "p256v1")).await;
    let partly = create(&app, &write, sealed("api.example.com", "p256v1")).await;
    assert_eq!(p256["key_delivery"], "sealed");
    assert!(plain.get("key_delivery").is_none(), "{plain}");
    for csr in [&p256, &rsa, &plain, &elsewhere] {
        certify(&app, &write, &ca, csr, &[]).await;
    }
    // Covers api.example.com, but also a name outside the recipient's hosts.
    certify(
        &app,
        &write,
        &ca,
        &partly,
        &["api.example.com", "api.other.net"],
    )
    .await;

    let r = enroll(
        &app,
        &delivery,
        json!(["shop.example.com", "*.example.com"]),
    )
    .await;
    deliveries(&app, &delivery, &r.id, "")
        .await
        .assert_failure(403, 1463);
    assert!(approve(&app, &r).contains("approved key recipient"));

    let resp = deliveries(&app, &delivery, &r.id, "").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    // Not the CSR without the opt-in, not the one whose names are elsewhere, not the one
    // whose certificate also covers a name outside the recipient's hosts.
    assert_eq!(resp.body["result_info"]["total_count"], 2);
    let items = resp.body["result"].as_array().unwrap();
    let mut ids: Vec<&str> = items
        .iter()
        .map(|i| i["custom_csr_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut expected = vec![p256["id"].as_str().unwrap(), rsa["id"].as_str().unwrap()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
    for item in items {
        let key = open_armored(&r.identity, item["sealed_key"].as_str().unwrap()).unwrap();
        let pem = std::str::from_utf8(&key).unwrap();
        assert!(
            pem.starts_with("-----BEGIN PRIVATE KEY-----\n"),
            "PKCS#8 PEM"
        );
        let (_, der) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let chain = item["certificate"].as_str().unwrap();
        let key_type = if item["custom_csr_id"] == p256["id"] {
            csrd::domain::KeyType::P256v1
        } else {
            csrd::domain::KeyType::Rsa2048
        };
        csrd::crypto::key_matches_certificate(
            key_type,
            &csrd::crypto::SecretBytes::new(der.contents.clone()),
            chain,
        )
        .expect("the delivered key is the certificate's");
        let (_, leaf) = x509_parser::pem::parse_x509_pem(chain.as_bytes()).unwrap();
        let leaf = leaf.parse_x509().unwrap();
        assert_eq!(
            item["spki_sha256"],
            hex::encode(sha2::Sha256::digest(leaf.public_key().raw)).as_str()
        );
        assert!(item["generation"].as_i64().unwrap() > 0);
    }
    // Sealed afresh each time: the same key, another file.
    let again = deliveries(&app, &delivery, &r.id, "").await;
    assert_ne!(
        again.body["result"][0]["sealed_key"],
        items[0]["sealed_key"]
    );

    let released = audit_actions(&app, "key.released").await;
    assert_eq!(released.len(), 4, "two releases, twice");
    assert_eq!(released[0]["recipient_id"], r.id.as_str());
    assert_eq!(released[0]["fingerprint"], r.fingerprint.as_str());
    for field in ["custom_csr_id", "certificate_id", "spki_sha256"] {
        assert!(released[0][field].is_string(), "{field}: {}", released[0]);
    }
    let denied = audit_actions(&app, "key.release_denied").await;
    assert_eq!(denied.len(), 1);
    assert_eq!(denied[0]["reason"], "pending");
}

#[tokio::test]
async fn key_delivery_is_chosen_at_creation_and_shown_only_when_sealed() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    for (value, shown) in [
        (json!("sealed"), true),
        (json!("none"), false),
        (Value::Null, false),
    ] {
        let body = with(named_body("a.example.com"), "key_delivery", value);
        let csr = create(&app, &token, body).await;
        assert_eq!(csr.get("key_delivery").is_some(), shown, "{csr}");
        let read = app
            .send(
                Method::GET,
                &format!(
                    "/client/v4/zones/{ZONE_A}/custom_csrs/{}",
                    csr["id"].as_str().unwrap()
                ),
                Auth::Bearer(&token),
                None,
            )
            .await;
        assert_eq!(read.body["result"].get("key_delivery").is_some(), shown);
    }
    for bad in [json!("Sealed"), json!(true), json!("plain")] {
        let body = with(named_body("a.example.com"), "key_delivery", bad);
        let resp = app
            .create("zones", ZONE_A, Auth::Bearer(&token), &body)
            .await;
        resp.assert_failure(400, 1400);
        assert_eq!(resp.body["errors"][0]["source"]["pointer"], "/key_delivery");
    }
    // A batch item too.
    let item = with(named_body("b.example.com"), "key_delivery", json!("sealed"));
    let submitted = app.submit_batch(ACCOUNT_A, &token, vec![item]).await;
    assert_eq!(submitted.status, 202);
    let id = submitted.json()["result"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let results = eventually("the batch item is made", || async {
        let r = app
            .send(
                Method::GET,
                &format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs/batches/{id}/results"),
                Auth::Bearer(&token),
                None,
            )
            .await;
        (r.body["result"][0]["status"] == "created").then_some(r)
    })
    .await;
    assert_eq!(
        results.body["result"][0]["result"]["key_delivery"],
        "sealed"
    );
}

#[tokio::test]
async fn only_a_key_delivery_token_reaches_recipients_and_it_reaches_nothing_else() {
    let app = spawn_in_memory().await;
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let read = app.token(&[], &[ZONE_A], Permission::Read).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let user = app.legacy_key("ops@example.com", &[], &[ZONE_A]).await;
    let body = json!({"name": "n", "recipient": csrd::crypto::seal::new_identity().1,
                      "hosts": ["a.example.com"]})
    .to_string();
    for auth in [
        Auth::Bearer(&write),
        Auth::Bearer(&read),
        Auth::Legacy("ops@example.com", &user),
    ] {
        app.send(Method::POST, &recipients(""), auth, Some(body.clone()))
            .await
            .assert_failure(403, 10000);
        app.send(Method::GET, &recipients(""), auth, None)
            .await
            .assert_failure(403, 10000);
    }
    app.create(
        "zones",
        ZONE_A,
        Auth::Bearer(&delivery),
        &named_body("a.example.com"),
    )
    .await
    .assert_failure(403, 10000);
    for path in ["custom_csrs", "custom_certificates"] {
        app.send(
            Method::GET,
            &format!("/client/v4/zones/{ZONE_A}/{path}"),
            Auth::Bearer(&delivery),
            None,
        )
        .await
        .assert_failure(403, 10000);
    }
    let ok = app
        .send(
            Method::POST,
            &recipients(""),
            Auth::Bearer(&delivery),
            Some(body),
        )
        .await;
    assert_eq!(ok.status, 201, "{}", ok.body);
}

#[tokio::test]
async fn enrollments_are_checked_and_recipients_stay_within_their_tenant() {
    let app = spawn_in_memory().await;
    let mine = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let other = app.token(&[ACCOUNT_A], &[], Permission::KeyDelivery).await;
    let send = |token: &str, body: Value| {
        let token = token.to_owned();
        let app = &app;
        async move {
            app.send(
                Method::POST,
                &recipients(""),
                Auth::Bearer(&token),
                Some(body.to_string()),
            )
            .await
        }
    };
    let good = csrd::crypto::seal::new_identity().1;
    for (body, pointer) in [
        (
            json!({"name": "n", "recipient": "age1xyz", "hosts": ["a.example.com"]}),
            "/recipient",
        ),
        (
            json!({"name": "n", "recipient": good.to_uppercase(), "hosts": ["a.example.com"]}),
            "/recipient",
        ),
        (
            json!({"recipient": good, "hosts": ["a.example.com"]}),
            "/name",
        ),
        (
            json!({"name": "n", "recipient": good, "hosts": []}),
            "/hosts",
        ),
        (
            json!({"name": "n", "recipient": good, "hosts": ["a b"]}),
            "/hosts/0",
        ),
        (
            json!({"name": "n", "recipient": good, "hosts": ["ok.example.com", "*.*.example.com"]}),
            "/hosts/1",
        ),
    ] {
        let resp = send(&mine, body).await;
        resp.assert_failure(400, 1460);
        assert_eq!(
            resp.body["errors"][0]["source"]["pointer"], pointer,
            "{}",
            resp.body
        );
    }
    let r = enroll(&app, &mine, json!(["a.example.com"])).await;
    // Another tenant's token names its own account: the zone's recipient is not there.
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/key_recipients/{}", r.id);
    app.send(Method::GET, &path, Auth::Bearer(&other), None)
        .await
        .assert_failure(404, 1462);
    app.send(
        Method::GET,
        &format!("{path}/deliveries"),
        Auth::Bearer(&other),
        None,
    )
    .await
    .assert_failure(404, 1462);
    app.send(Method::DELETE, &path, Auth::Bearer(&other), None)
        .await
        .assert_failure(404, 1462);
    // Nor can it name the zone.
    app.send(
        Method::GET,
        &recipients(&format!("/{}", r.id)),
        Auth::Bearer(&other),
        None,
    )
    .await
    .assert_failure(403, 10000);
    app.send(
        Method::GET,
        &recipients("/not-a-uuid"),
        Auth::Bearer(&mine),
        None,
    )
    .await
    .assert_failure(400, 1461);
    let listed = app
        .send(Method::GET, &recipients(""), Auth::Bearer(&mine), None)
        .await;
    assert_eq!(listed.body["result_info"]["total_count"], 1);
    assert_eq!(listed.body["result"][0]["id"], r.id.as_str());
}

#[tokio::test]
async fn only_the_operator_with_the_fingerprint_approves_and_a_revocation_is_final() {
    let app = spawn_in_memory().await;
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let csr = create(&app, &write, sealed("shop.example.com", "p256v1")).await;
    certify(&app, &write, &TestCa::new(), &csr, &[]).await;
    let r = enroll(&app, &delivery, json!(["shop.example.com"])).await;

    let wrong = csrd_test_support::process::csrd_command(
        CSRD,
        &app.iso,
        &[
            "recipient",
            "approve",
            &r.id,
            "--fingerprint",
            &"0".repeat(64),
        ],
    )
    .output()
    .unwrap();
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not key recipient"));
    deliveries(&app, &delivery, &r.id, "")
        .await
        .assert_failure(403, 1463);

    approve(&app, &r);
    assert_eq!(
        deliveries(&app, &delivery, &r.id, "").await.body["result_info"]["count"],
        1
    );
    let listed = run_ok(
        CSRD,
        &app.iso,
        &["recipient", "list", "--zone", ZONE_A, "--json"],
    );
    let row: Value = serde_json::from_str(listed.lines().next().unwrap()).unwrap();
    assert_eq!(row["status"], "active");

    let revoked = app
        .send(
            Method::DELETE,
            &recipients(&format!("/{}", r.id)),
            Auth::Bearer(&delivery),
            None,
        )
        .await;
    assert_eq!(revoked.body["result"]["status"], "revoked");
    deliveries(&app, &delivery, &r.id, "")
        .await
        .assert_failure(403, 1463);
    let again = csrd_test_support::process::csrd_command(
        CSRD,
        &app.iso,
        &[
            "recipient",
            "approve",
            &r.id,
            "--fingerprint",
            &r.fingerprint,
        ],
    )
    .output()
    .unwrap();
    assert!(!again.status.success(), "a revoked recipient stays revoked");

    let reasons: Vec<Value> = audit_actions(&app, "key.release_denied")
        .await
        .into_iter()
        .map(|d| d["reason"].clone())
        .collect();
    assert_eq!(reasons, [json!("pending"), json!("revoked")]);
    let approvals = {
        let client = app.pool.get().await.unwrap();
        client
            .query(
                "SELECT outcome, actor_kind FROM audit_log WHERE action = 'key_recipient.approve'
                 ORDER BY id",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        approvals,
        [
            ("denied".to_owned(), "operator".to_owned()),
            ("ok".to_owned(), "operator".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_new_certificate_raises_the_generation_and_replaces_the_delivered_one() {
    let app = spawn_in_memory().await;
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let ca = TestCa::new();
    let csr = create(&app, &write, sealed("shop.example.com", "p256v1")).await;
    let first = certify(&app, &write, &ca, &csr, &[]).await;
    let r = enroll(&app, &delivery, json!(["shop.example.com"])).await;
    approve(&app, &r);
    let before = deliveries(&app, &delivery, &r.id, "").await.body["result"][0].clone();
    assert_eq!(before["certificate_id"], first["id"]);

    let second = certify(&app, &write, &ca, &csr, &[]).await;
    let after = deliveries(&app, &delivery, &r.id, "").await.body["result"][0].clone();
    assert_eq!(after["certificate_id"], second["id"]);
    assert!(after["generation"].as_i64() > before["generation"].as_i64());
    assert_eq!(after["spki_sha256"], before["spki_sha256"], "the same key");
    assert_ne!(after["serial_number"], before["serial_number"]);
}

#[tokio::test]
async fn deliveries_page_as_cloudflare_lists_do() {
    let app = spawn_in_memory().await;
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let ca = TestCa::new();
    for i in 0..7 {
        let csr = create(&app, &write, sealed(&format!("h{i}.example.com"), "p256v1")).await;
        certify(&app, &write, &ca, &csr, &[]).await;
    }
    let r = enroll(&app, &delivery, json!(["*.example.com"])).await;
    approve(&app, &r);
    let mut seen = Vec::new();
    for page in 1..=2 {
        let resp = deliveries(&app, &delivery, &r.id, &format!("?per_page=5&page={page}")).await;
        assert_eq!(resp.body["result_info"]["total_count"], 7);
        assert_eq!(resp.body["result_info"]["total_pages"], 2);
        for item in resp.body["result"].as_array().unwrap() {
            seen.push(item["custom_csr_id"].as_str().unwrap().to_owned());
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(sorted, seen, "in id order, each once");
    let past = deliveries(&app, &delivery, &r.id, "?per_page=5&page=3").await;
    assert_eq!(past.body["result"], json!([]));
    assert_eq!(
        past.body["result_info"]["total_count"], 7,
        "counted past the end too"
    );
    deliveries(&app, &delivery, &r.id, "?per_page=101")
        .await
        .assert_failure(400, 1400);
}

#[tokio::test]
async fn a_certificate_naming_the_recipients_host_does_not_take_another_names_key_to_it() {
    let app = spawn_in_memory().await;
    let write = app.token(&[], &[ZONE_A], Permission::Write).await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    // The tenant's own CA issues, for a.example.com's key, a leaf naming only b.example.com.
    let csr = create(&app, &write, sealed("a.example.com", "p256v1")).await;
    certify(&app, &write, &TestCa::new(), &csr, &["b.example.com"]).await;
    let r = enroll(&app, &delivery, json!(["b.example.com"])).await;
    approve(&app, &r);
    let page = deliveries(&app, &delivery, &r.id, "").await;
    assert_eq!(page.body["result_info"]["total_count"], 0, "{}", page.body);
    // A recipient covering the CSR's names too receives it.
    let both = enroll(&app, &delivery, json!(["a.example.com", "b.example.com"])).await;
    approve(&app, &both);
    let page = deliveries(&app, &delivery, &both.id, "").await;
    assert_eq!(page.body["result_info"]["total_count"], 1, "{}", page.body);
}

#[tokio::test]
async fn a_tenant_holds_a_bounded_number_of_recipients() {
    let app = spawn_in_memory().await;
    let delivery = app.token(&[], &[ZONE_A], Permission::KeyDelivery).await;
    let recipient = csrd::crypto::seal::new_identity().1;
    let body = json!({"name": "n", "recipient": recipient, "hosts": ["a.example.com"]}).to_string();
    let max = csrd::ingress::deliveries::MAX_RECIPIENTS;
    let mut last = None;
    for _ in 0..max {
        let r = app
            .send(
                Method::POST,
                &recipients(""),
                Auth::Bearer(&delivery),
                Some(body.clone()),
            )
            .await;
        assert_eq!(r.status, 201);
        last = Some(r.body["result"]["id"].as_str().unwrap().to_owned());
    }
    app.send(
        Method::POST,
        &recipients(""),
        Auth::Bearer(&delivery),
        Some(body.clone()),
    )
    .await
    .assert_failure(400, 1460);
    // A revoked one makes room.
    let id = last.unwrap();
    app.send(
        Method::DELETE,
        &recipients(&format!("/{id}")),
        Auth::Bearer(&delivery),
        None,
    )
    .await;
    let r = app
        .send(
            Method::POST,
            &recipients(""),
            Auth::Bearer(&delivery),
            Some(body),
        )
        .await;
    assert_eq!(r.status, 201);
}
