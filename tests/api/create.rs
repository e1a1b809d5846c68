use csrd::auth::Permission;
use serde_json::json;

use crate::csr_check::{openssl_verifies, parse_csr};
use csrd_test_support::*;

#[tokio::test]
async fn cloudflare_example_request_creates_an_account_csr_exactly_as_written() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let resp = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &example_body())
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    assert_eq!(resp.body["success"], json!(true));
    assert_eq!(resp.body["errors"], json!([]));
    assert_eq!(resp.body["messages"], json!([]));
    let r = &resp.body["result"];
    let id = r["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok() && id.len() == 36);
    chrono::DateTime::parse_from_rfc3339(r["created_at"].as_str().unwrap())
        .expect("RFC 3339 created_at");
    for (field, expected) in [
        ("key_type", json!("rsa2048")),
        ("account_tag", json!(ACCOUNT_A)),
        ("common_name", json!("example.com")),
        ("country", json!("US")),
        ("state", json!("California")),
        ("locality", json!("San Francisco")),
        ("organization", json!("Cloudflare, Inc.")),
        ("organizational_unit", json!("Engineering")),
        ("sans", json!(["example.com", "www.example.com"])),
        ("name", json!("My Custom CSR")),
        ("description", json!("CSR for example.com wildcard")),
    ] {
        assert_eq!(r[field], expected, "{field}");
    }

    let pem = r["csr"].as_str().unwrap();
    let csr = parse_csr(pem);
    assert_eq!(
        csr.subject,
        vec![
            ("C", "US".to_owned()),
            ("ST", "California".to_owned()),
            ("L", "San Francisco".to_owned()),
            ("O", "Cloudflare, Inc.".to_owned()),
            ("OU", "Engineering".to_owned()),
            ("CN", "example.com".to_owned()),
        ]
    );
    assert_eq!(csr.sans, vec!["example.com", "www.example.com"]);
    assert_eq!(csr.key_type, "rsa2048");
    assert_eq!(csr.rsa_bits, Some(2048));
    assert_eq!(csr.rsa_exponent, Some(vec![0x01, 0x00, 0x01]));
    assert!(openssl_verifies(pem), "openssl req -verify accepts the CSR");
}

#[tokio::test]
async fn zone_create_with_p256_key_omits_account_fields_and_ou_when_absent() {
    let app = spawn_app().await;
    let token = app.token(&[], &[ZONE_A], Permission::Write).await;
    let mut body = example_body();
    body["key_type"] = json!("p256v1");
    body["sans"] = json!(["*.shop.acme-widgets.io", "shop.acme-widgets.io"]);
    body.as_object_mut().unwrap().remove("organizational_unit");
    let resp = app
        .create("zones", ZONE_A, Auth::Bearer(&token), &body)
        .await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    let r = &resp.body["result"];
    assert_eq!(r["key_type"], json!("p256v1"));
    for absent in ["account_tag", "name", "description", "organizational_unit"] {
        assert!(
            r.get(absent).is_none(),
            "{absent} must be absent from a zone result: {r}"
        );
    }
    let pem = r["csr"].as_str().unwrap();
    let csr = parse_csr(pem);
    assert_eq!(csr.key_type, "p256v1");
    assert_eq!(
        csr.sans,
        vec!["*.shop.acme-widgets.io", "shop.acme-widgets.io"]
    );
    assert_eq!(
        csr.subject.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        vec!["C", "ST", "L", "O", "CN"]
    );
    assert!(openssl_verifies(pem));
}

#[tokio::test]
async fn key_type_defaults_to_rsa2048_and_every_create_gets_a_fresh_key() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let mut body = example_body();
    body.as_object_mut().unwrap().remove("key_type");
    let first = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
        .await;
    let second = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
        .await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.body["result"]["key_type"], json!("rsa2048"));
    assert_ne!(first.body["result"]["id"], second.body["result"]["id"]);
    let a = parse_csr(first.body["result"]["csr"].as_str().unwrap());
    let b = parse_csr(second.body["result"]["csr"].as_str().unwrap());
    assert_eq!(a.key_type, "rsa2048");
    assert_ne!(a.spki_der, b.spki_der, "a fresh key per create");

    let p1 = app
        .create(
            "accounts",
            ACCOUNT_A,
            Auth::Bearer(&token),
            &with(body.clone(), "key_type", json!("p256v1")),
        )
        .await;
    let p2 = app
        .create(
            "accounts",
            ACCOUNT_A,
            Auth::Bearer(&token),
            &with(body, "key_type", json!("p256v1")),
        )
        .await;
    let (p1, p2) = (
        parse_csr(p1.body["result"]["csr"].as_str().unwrap()),
        parse_csr(p2.body["result"]["csr"].as_str().unwrap()),
    );
    assert_ne!(p1.spki_der, p2.spki_der);
}

/// Sets or resets `default_transaction_read_only` for the app's database and closes its open
/// connections, so the app's pool reconnects and sees it (a failover to a standby, in small).
async fn make_read_only(app: &TestApp, read_only: bool) {
    let admin = csrd::db::build_pool(&admin_url(), 1, "csrd-tests").unwrap();
    let db = &app.iso.db_name;
    let setting = if read_only {
        "SET default_transaction_read_only = on"
    } else {
        "RESET default_transaction_read_only"
    };
    admin
        .get()
        .await
        .unwrap()
        .batch_execute(&format!(
            "ALTER DATABASE {db} {setting};
             SELECT pg_terminate_backend(pid) FROM pg_stat_activity
              WHERE datname = '{db}' AND pid <> pg_backend_pid();"
        ))
        .await
        .unwrap();
}

#[tokio::test]
async fn readiness_fails_while_postgres_takes_no_writes() {
    let app = spawn_in_memory().await;
    let ready = app
        .send(reqwest::Method::GET, "/readyz", Auth::None, None)
        .await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    make_read_only(&app, true).await;
    eventually("readyz to answer 503 on a read-only Postgres", || async {
        let ready = app
            .send(reqwest::Method::GET, "/readyz", Auth::None, None)
            .await;
        (ready.status == 503).then_some(())
    })
    .await;
    make_read_only(&app, false).await;
    eventually("readyz to answer 200 again", || async {
        let ready = app
            .send(reqwest::Method::GET, "/readyz", Auth::None, None)
            .await;
        (ready.status == 200).then_some(())
    })
    .await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = spawn_app().await;
    let health = app
        .send(reqwest::Method::GET, "/healthz", Auth::None, None)
        .await;
    assert_eq!(health.status, 200);
    let ready = app
        .send(reqwest::Method::GET, "/readyz", Auth::None, None)
        .await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["status"], json!("ready"));
    let metrics = app
        .http
        .get(app.admin_url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(metrics.status().as_u16(), 200);
    assert!(
        metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    // Not on the public listener: its figures span tenants.
    let public = app.http.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(public.status().as_u16(), 404);
}

#[tokio::test]
async fn the_private_key_is_stored_sealed_and_matches_the_csr() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let resp = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &example_body())
        .await;
    assert_eq!(resp.status, 201);
    let id = csrd::domain::CsrId::parse(resp.body["result"]["id"].as_str().unwrap()).unwrap();
    let owner = csrd::domain::Owner::Account(csrd::domain::AccountId::parse(ACCOUNT_A).unwrap());
    let client = app.pool.get().await.unwrap();
    let sealed = csrd::db::csrs::get_sealed_key(&**client, &owner, id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(sealed.kek_id, "test-kek");
    let pkcs8 = csrd::crypto::open(&app.keyring, id, &owner, &sealed).unwrap();
    let key = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(
        &pkcs8.expose().into(),
        &rcgen::PKCS_RSA_SHA256,
    )
    .unwrap();
    let csr = parse_csr(resp.body["result"]["csr"].as_str().unwrap());
    use rcgen::PublicKeyData;
    assert_eq!(
        key.subject_public_key_info(),
        csr.spki_der,
        "the sealed key is the CSR's key"
    );
}
