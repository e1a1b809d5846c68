//! Custom certificates uploaded against custom CSRs: checked against the key csrd holds,
//! stored, read back, listed by expiry, and a CSR whose key is in use kept from deletion.

use csrd::auth::Permission;
use reqwest::Method;
use serde_json::{Value, json};

use csrd_test_support::*;

async fn new_csr(app: &TestApp, token: &str, kind: &str, owner: &str, name: &str) -> Value {
    let body = with(p256_body(), "sans", json!([name]));
    let body = with(body, "common_name", json!(name));
    let resp = app.create(kind, owner, Auth::Bearer(token), &body).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
    resp.body["result"].clone()
}

fn path(kind: &str, owner: &str, rest: &str) -> String {
    format!("/client/v4/{kind}/{owner}/custom_certificates{rest}")
}

async fn upload(app: &TestApp, token: &str, kind: &str, owner: &str, body: Value) -> Response {
    app.send(
        Method::POST,
        &path(kind, owner, ""),
        Auth::Bearer(token),
        Some(body.to_string()),
    )
    .await
}

fn codes(resp: &Response) -> Vec<u64> {
    resp.body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["code"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn a_signed_certificate_is_stored_read_back_and_holds_its_csr_until_deleted() {
    let app = spawn_in_memory().await;
    let token = app.token(&[], &[ZONE_A], Permission::Write).await;
    let ca = TestCa::new();
    let csr = new_csr(&app, &token, "zones", ZONE_A, "shop.example.org").await;
    let chain = ca.sign(csr["csr"].as_str().unwrap());

    let resp = upload(
        &app,
        &token,
        "zones",
        ZONE_A,
        json!({"certificate": chain, "custom_csr_id": csr["id"], "bundle_method": "force"}),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let cert = resp.body["result"].clone();
    assert_eq!(cert["custom_csr_id"], csr["id"]);
    assert_eq!(cert["zone_id"], ZONE_A);
    assert_eq!(cert["hosts"], json!(["shop.example.org"]));
    assert_eq!(cert["issuer"], "csrd test CA");
    assert_eq!(cert["signature"], "ECDSAWithSHA256");
    assert_eq!(cert["status"], "active");
    assert_eq!(cert["bundle_method"], "force");
    assert_eq!(cert["type"], "legacy_custom");
    assert!(
        cert["expires_on"]
            .as_str()
            .unwrap()
            .starts_with("2090-01-01")
    );
    assert_eq!(
        resp.body["messages"],
        json!([]),
        "every CSR name is covered"
    );
    let id = cert["id"].as_str().unwrap();

    let got = app
        .send(
            Method::GET,
            &path("zones", ZONE_A, &format!("/{id}")),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body["result"], cert);
    let listed = app
        .send(
            Method::GET,
            &path("zones", ZONE_A, ""),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(listed.body["result"], json!([cert]));
    assert_eq!(listed.body["result_info"]["total_count"], 1);
    assert_eq!(listed.body["result_info"]["per_page"], 20);

    let edited = app
        .send(
            Method::PATCH,
            &path("zones", ZONE_A, &format!("/{id}")),
            Auth::Bearer(&token),
            Some(json!({"bundle_method": "optimal"}).to_string()),
        )
        .await;
    assert_eq!(edited.status, 200, "{}", edited.body);
    assert_eq!(edited.body["result"]["bundle_method"], "optimal");
    assert_eq!(edited.body["result"]["id"], id);

    let csr_path = format!(
        "/client/v4/zones/{ZONE_A}/custom_csrs/{}",
        csr["id"].as_str().unwrap()
    );
    let refused = app
        .send(Method::DELETE, &csr_path, Auth::Bearer(&token), None)
        .await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(codes(&refused), vec![1420]);
    let still = app
        .send(Method::GET, &csr_path, Auth::Bearer(&token), None)
        .await;
    assert_eq!(still.status, 200, "the CSR and its key are still there");

    let deleted = app
        .send(
            Method::DELETE,
            &path("zones", ZONE_A, &format!("/{id}")),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(deleted.status, 200);
    assert_eq!(deleted.body["result"]["id"], id);
    let csr_gone = app
        .send(Method::DELETE, &csr_path, Auth::Bearer(&token), None)
        .await;
    assert_eq!(csr_gone.status, 200, "{}", csr_gone.body);
}

#[tokio::test]
async fn an_edit_of_an_sni_custom_certificate_gets_a_new_id_and_null_clears_restrictions() {
    let app = spawn_in_memory().await;
    let token = app.token(&[], &[ZONE_A], Permission::Write).await;
    let ca = TestCa::new();
    let csr = new_csr(&app, &token, "zones", ZONE_A, "sni.example.org").await;
    let resp = upload(
        &app,
        &token,
        "zones",
        ZONE_A,
        json!({
            "certificate": ca.sign(csr["csr"].as_str().unwrap()),
            "custom_csr_id": csr["id"],
            "type": "sni_custom",
            "geo_restrictions": {"label": "eu"},
            "policy": "(country: US)",
        }),
    )
    .await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let old_id = resp.body["result"]["id"].as_str().unwrap().to_string();
    assert_eq!(resp.body["result"]["geo_restrictions"]["label"], "eu");

    let edit = |id: String, body: Value| {
        let (app, token) = (&app, &token);
        async move {
            app.send(
                Method::PATCH,
                &path("zones", ZONE_A, &format!("/{id}")),
                Auth::Bearer(token),
                Some(body.to_string()),
            )
            .await
        }
    };
    // An edit that names neither restriction keeps both.
    let kept = edit(old_id.clone(), json!({"bundle_method": "force"})).await;
    assert_eq!(kept.status, 200, "{}", kept.body);
    let new_id = kept.body["result"]["id"].as_str().unwrap().to_string();
    assert_ne!(
        new_id, old_id,
        "Cloudflare issues sni_custom a new id on PATCH"
    );
    assert_eq!(kept.body["result"]["type"], "sni_custom");
    assert_eq!(kept.body["result"]["geo_restrictions"]["label"], "eu");
    assert_eq!(kept.body["result"]["policy_restrictions"], "(country: US)");
    let old = app
        .send(
            Method::GET,
            &path("zones", ZONE_A, &format!("/{old_id}")),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(old.status, 404, "the previous id is gone: {}", old.body);

    let cleared = edit(
        new_id.clone(),
        json!({"geo_restrictions": null, "policy": null}),
    )
    .await;
    assert_eq!(cleared.status, 200, "{}", cleared.body);
    let result = &cleared.body["result"];
    assert!(
        result.get("geo_restrictions").is_none_or(Value::is_null),
        "{result}"
    );
    assert!(
        result.get("policy_restrictions").is_none_or(Value::is_null),
        "{result}"
    );
    let listed = app
        .send(
            Method::GET,
            &path("zones", ZONE_A, ""),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(
        listed.body["result_info"]["total_count"], 1,
        "{}",
        listed.body
    );
    assert_eq!(listed.body["result"][0]["id"], result["id"]);
}

#[tokio::test]
async fn bad_certificates_are_refused_with_their_code_and_nothing_is_stored() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let ca = TestCa::new();
    let a = new_csr(&app, &token, "accounts", ACCOUNT_A, "a.example.org").await;
    let b = new_csr(&app, &token, "accounts", ACCOUNT_A, "b.example.org").await;
    let a_pem = a["csr"].as_str().unwrap();
    let for_b = ca.sign(b["csr"].as_str().unwrap());
    let pasted_key = "-----BEGIN PRIVATE KEY-----\nTOPSECRETKEYBYTES\n-----END PRIVATE KEY-----\n";
    let cases: Vec<(&str, Value, u64)> = vec![
        ("another CSR's key", json!(for_b), 1429),
        (
            "a self-signed leaf",
            json!(csrd_test_support::ca::self_signed("a.example.org")),
            1442,
        ),
        (
            "an expired leaf",
            json!(ca.sign_between(a_pem, 2020, 2021)),
            1443,
        ),
        (
            "a leaf not yet valid",
            json!(ca.sign_between(a_pem, 2095, 2098)),
            1444,
        ),
        ("garbage", json!("not a certificate at all"), 1426),
        (
            "a garbage PEM block",
            json!("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"),
            1426,
        ),
        ("a private key pasted in", json!(pasted_key), 1440),
        ("an empty certificate", json!(""), 1427),
        ("eleven certificates", json!(ca.pem.repeat(11)), 1441),
        // The key is checked before any signature (cheap checks first): a leaf for a key
        // csrd does not hold is 1429 whatever signed it. (That a lone leaf signed by its own
        // key is refused as self-signed is tested in crypto::chain: only csrd holds the CSR's
        // key, so no client can make one for it.)
        (
            "a leaf signed by its own key under another issuer's name",
            json!(csrd_test_support::ca::self_signed_under_another_name(
                "a.example.org"
            )),
            1429,
        ),
        (
            "the right leaf followed by an impostor CA of the same name",
            json!(format!(
                "{}{}",
                ca.sign_between(a_pem, 2024, 2090),
                TestCa::new().pem
            )),
            1445,
        ),
        (
            "the chain reversed",
            json!(format!("{}{}", ca.pem, ca.sign_between(a_pem, 2024, 2090))),
            1445,
        ),
    ];
    for (what, certificate, code) in cases {
        let resp = upload(
            &app,
            &token,
            "accounts",
            ACCOUNT_A,
            json!({"certificate": certificate, "custom_csr_id": a["id"]}),
        )
        .await;
        assert_eq!(resp.status, 400, "{what}: {}", resp.body);
        assert_eq!(codes(&resp), vec![code], "{what}: {}", resp.body);
        assert_eq!(
            resp.body["errors"][0]["source"]["pointer"], "/certificate",
            "{what}"
        );
        assert!(
            !resp.body.to_string().contains("TOPSECRET"),
            "{what}: input echoed"
        );
    }
    let with_key = upload(
        &app,
        &token,
        "accounts",
        ACCOUNT_A,
        json!({"certificate": ca.sign(a_pem), "custom_csr_id": a["id"], "private_key": pasted_key}),
    )
    .await;
    assert_eq!(with_key.status, 400);
    assert_eq!(codes(&with_key), vec![1440]);
    assert!(!with_key.body.to_string().contains("TOPSECRET"));
    // Nothing in a chain is signature-checked, so a made-up leaf's fields are bounded: a
    // serial of 64 bytes is refused, not a 500 from an index row too large.
    let long_serial = upload(
        &app,
        &token,
        "accounts",
        ACCOUNT_A,
        json!({"certificate": ca.sign_with_serial(a_pem, vec![0x5a; 64]), "custom_csr_id": a["id"]}),
    )
    .await;
    assert_eq!(long_serial.status, 400, "{}", long_serial.body);
    assert_eq!(codes(&long_serial), vec![1426]);
    for (policy, code) in [
        (r"a\u0000b", 1434),
        ("-----BEGIN PRIVATE KEY-----TOPSECRET", 1440),
    ] {
        let body = format!(
            r#"{{"certificate": {}, "custom_csr_id": {}, "policy": "{policy}"}}"#,
            json!(ca.sign(a_pem)),
            a["id"]
        );
        let resp = app
            .send(
                Method::POST,
                &path("accounts", ACCOUNT_A, ""),
                Auth::Bearer(&token),
                Some(body),
            )
            .await;
        assert_eq!(resp.status, 400, "{}", resp.body);
        assert_eq!(codes(&resp), vec![code]);
        assert!(!resp.body.to_string().contains("TOPSECRET"));
    }
    let without_csr = upload(
        &app,
        &token,
        "accounts",
        ACCOUNT_A,
        json!({"certificate": ca.sign(a_pem)}),
    )
    .await;
    assert_eq!(codes(&without_csr), vec![1430]);

    let listed = app
        .send(
            Method::GET,
            &path("accounts", ACCOUNT_A, ""),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(
        listed.body["result_info"]["total_count"], 0,
        "nothing stored"
    );
}

#[tokio::test]
async fn another_tenants_csr_and_certificate_are_unknown_here() {
    let app = spawn_in_memory().await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let ca = TestCa::new();
    let csr = new_csr(&app, &a, "accounts", ACCOUNT_A, "mine.example.org").await;
    let chain = ca.sign(csr["csr"].as_str().unwrap());

    let stolen = upload(
        &app,
        &b,
        "accounts",
        ACCOUNT_B,
        json!({"certificate": chain, "custom_csr_id": csr["id"]}),
    )
    .await;
    assert_eq!(stolen.status, 404, "{}", stolen.body);
    assert_eq!(codes(&stolen), vec![1431]);

    let mine = upload(
        &app,
        &a,
        "accounts",
        ACCOUNT_A,
        json!({"certificate": chain, "custom_csr_id": csr["id"]}),
    )
    .await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    let id = mine.body["result"]["id"].as_str().unwrap();
    for method in [Method::GET, Method::DELETE] {
        let resp = app
            .send(
                method.clone(),
                &path("accounts", ACCOUNT_B, &format!("/{id}")),
                Auth::Bearer(&b),
                None,
            )
            .await;
        assert_eq!(resp.status, 404, "{method}: {}", resp.body);
        assert_eq!(codes(&resp), vec![1002]);
    }
    let malformed = app
        .send(
            Method::GET,
            &path("accounts", ACCOUNT_A, "/nope"),
            Auth::Bearer(&a),
            None,
        )
        .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(codes(&malformed), vec![1002]);
}

#[tokio::test]
async fn the_expiry_filter_finds_what_expires_first_and_uncovered_names_are_reported() {
    let app = spawn_in_memory().await;
    let token = app.token(&[], &[ZONE_A], Permission::Write).await;
    let ca = TestCa::new();
    let soon = new_csr(&app, &token, "zones", ZONE_A, "soon.example.org").await;
    let late = new_csr(&app, &token, "zones", ZONE_A, "late.example.org").await;
    let soon_chain = ca.sign_between(soon["csr"].as_str().unwrap(), 2024, 2030);
    let r = upload(
        &app,
        &token,
        "zones",
        ZONE_A,
        json!({"certificate": soon_chain, "custom_csr_id": soon["id"]}),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A certificate for fewer names than the CSR asked for is stored, and the gap reported.
    let two_names = with(
        p256_body(),
        "sans",
        json!(["late.example.org", "www.late.example.org"]),
    );
    let two = app
        .create("zones", ZONE_A, Auth::Bearer(&token), &two_names)
        .await;
    assert_eq!(two.status, 201);
    let one_name = ca.sign_names(
        two.body["result"]["csr"].as_str().unwrap(),
        &["late.example.org"],
    );
    let partial = upload(
        &app,
        &token,
        "zones",
        ZONE_A,
        json!({"certificate": one_name, "custom_csr_id": two.body["result"]["id"]}),
    )
    .await;
    assert_eq!(partial.status, 200, "{}", partial.body);
    assert_eq!(partial.body["messages"][0]["code"], 1446);
    assert!(
        partial.body["messages"][0]["message"]
            .as_str()
            .unwrap()
            .contains("www.late.example.org")
    );
    let late_chain = ca.sign(late["csr"].as_str().unwrap());
    let covered = upload(
        &app,
        &token,
        "zones",
        ZONE_A,
        json!({"certificate": late_chain, "custom_csr_id": late["id"]}),
    )
    .await;
    assert_eq!(covered.status, 200);
    assert_eq!(covered.body["messages"], json!([]));

    let expiring = app
        .send(
            Method::GET,
            &path("zones", ZONE_A, "?expires_before=2031-01-01T00:00:00Z"),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(expiring.status, 200, "{}", expiring.body);
    assert_eq!(expiring.body["result_info"]["total_count"], 1);
    let hosts: Vec<&Value> = expiring.body["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| &c["hosts"])
        .collect();
    assert_eq!(hosts, vec![&json!(["soon.example.org"])]);
    let bad = app
        .send(
            Method::GET,
            &path("zones", ZONE_A, "?expires_before=tomorrow"),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["errors"][0]["source"]["parameter"],
        "expires_before"
    );
}

#[tokio::test]
async fn metrics_count_certificates_expiring_within_7_and_30_days_across_tenants() {
    // `csrd certs expiring` lists the same certificates, soonest first (checked at the end).
    use chrono::Datelike as _;
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    let ca = TestCa::new();
    let day = |days: i64| {
        let d = chrono::Utc::now() + chrono::Duration::days(days);
        (d.year(), d.month() as u8, d.day() as u8)
    };
    for (kind, owner, name, until) in [
        ("zones", ZONE_A, "in3.example.org", day(3)),
        ("accounts", ACCOUNT_A, "in20.example.org", day(20)),
        ("accounts", ACCOUNT_A, "later.example.org", day(400)),
    ] {
        let csr = new_csr(&app, &token, kind, owner, name).await;
        let leaf = ca.sign_until(csr["csr"].as_str().unwrap(), until);
        let resp = upload(
            &app,
            &token,
            kind,
            owner,
            json!({"certificate": leaf, "custom_csr_id": csr["id"]}),
        )
        .await;
        assert_eq!(resp.status, 200, "{}", resp.body);
    }
    let text = reqwest::get(app.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("csrd_certificates_expiring{days=\"7\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("csrd_certificates_expiring{days=\"30\"} 2"),
        "{text}"
    );

    let hosts =
        |rows: Vec<Value>| -> Vec<Value> { rows.iter().map(|r| r["hosts"][0].clone()).collect() };
    assert_eq!(
        hosts(certs_expiring(&app, &["--days", "30"]).await),
        vec![json!("in3.example.org"), json!("in20.example.org")]
    );
    assert_eq!(
        hosts(certs_expiring(&app, &["--days", "30", "--account", ACCOUNT_A]).await),
        vec![json!("in20.example.org")]
    );
    assert_eq!(
        hosts(certs_expiring(&app, &["--days", "7", "--zone", ZONE_A]).await),
        vec![json!("in3.example.org")]
    );
}

#[tokio::test]
async fn certs_expiring_refuses_a_window_past_a_hundred_years_without_panicking() {
    let app = spawn_in_memory().await;
    for days in ["100000000", "36526"] {
        let out = csrd_test_support::process::csrd_command(
            env!("CARGO_BIN_EXE_csrd"),
            &app.iso,
            &["certs", "expiring", "--days", days],
        )
        .output()
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--days {days}: {stderr}");
        assert!(!stderr.contains("panicked"), "--days {days}: {stderr}");
        assert!(stderr.contains("--days"), "--days {days}: {stderr}");
    }
    assert!(
        certs_expiring(&app, &["--days", "36525"]).await.is_empty(),
        "the widest window is taken"
    );
}

/// `csrd certs expiring`, as an operator runs it against the test's database.
async fn certs_expiring(app: &TestApp, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["certs", "expiring"];
    all.extend_from_slice(args);
    all.push("--json");
    let out = csrd_test_support::process::csrd_command(env!("CARGO_BIN_EXE_csrd"), &app.iso, &all)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn a_bulk_upload_is_all_or_nothing_and_sending_it_again_changes_nothing() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let ca = TestCa::new();
    let mut items = Vec::new();
    for i in 0..1000 {
        let csr = new_csr(
            &app,
            &token,
            "accounts",
            ACCOUNT_A,
            &format!("h{i}.example.org"),
        )
        .await;
        let leaf = ca.sign_between(csr["csr"].as_str().unwrap(), 2024, 2090);
        items.push(json!({"custom_csr_id": csr["id"], "certificate": leaf}));
    }
    let bulk_path = path("accounts", ACCOUNT_A, "/bulk");
    let bulk = |items: Vec<Value>| {
        app.send(
            Method::POST,
            &bulk_path,
            Auth::Bearer(&token),
            Some(json!({ "items": items }).to_string()),
        )
    };
    // Item 617 carries item 618's certificate: not its CSR's key.
    let mut bad = items.clone();
    bad[617]["certificate"] = items[618]["certificate"].clone();
    let refused = bulk(bad).await;
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(codes(&refused), vec![1429]);
    assert_eq!(
        refused.body["errors"][0]["source"]["pointer"],
        "/items/617/certificate"
    );
    let listed = app
        .send(
            Method::GET,
            &path("accounts", ACCOUNT_A, ""),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(
        listed.body["result_info"]["total_count"], 0,
        "nothing stored"
    );

    let stored = bulk(items.clone()).await;
    assert_eq!(stored.status, 200, "{}", stored.body);
    let result = stored.body["result"].as_array().unwrap();
    assert_eq!(result.len(), 1000);
    assert_eq!(result[617]["custom_csr_id"], items[617]["custom_csr_id"]);
    let again = bulk(items).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(
        again.body["result"], stored.body["result"],
        "the same ids, nothing new"
    );
    let listed = app
        .send(
            Method::GET,
            &path("accounts", ACCOUNT_A, ""),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(listed.body["result_info"]["total_count"], 1000);

    // A single upload of a stored certificate is Cloudflare's 1220.
    let one = upload(
        &app,
        &token,
        "accounts",
        ACCOUNT_A,
        json!({"certificate": listed.body["result"][0]["certificate"], "custom_csr_id": listed.body["result"][0]["custom_csr_id"]}),
    )
    .await;
    assert_eq!(one.status, 400, "{}", one.body);
    assert_eq!(codes(&one), vec![1220]);

    // An edit that would make a certificate a copy of another one of its CSR is refused the
    // same way (a second leaf for the first CSR, then edited back to the first leaf).
    let first = &listed.body["result"][0];
    let csr_pem = app
        .send(
            Method::GET,
            &format!(
                "/client/v4/accounts/{ACCOUNT_A}/custom_csrs/{}",
                first["custom_csr_id"].as_str().unwrap()
            ),
            Auth::Bearer(&token),
            None,
        )
        .await
        .body["result"]["csr"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = upload(
        &app,
        &token,
        "accounts",
        ACCOUNT_A,
        json!({"certificate": ca.sign_between(&csr_pem, 2024, 2091), "custom_csr_id": first["custom_csr_id"]}),
    )
    .await;
    assert_eq!(second.status, 200, "{}", second.body);
    let copy = app
        .send(
            Method::PATCH,
            &path(
                "accounts",
                ACCOUNT_A,
                &format!("/{}", second.body["result"]["id"].as_str().unwrap()),
            ),
            Auth::Bearer(&token),
            Some(json!({"certificate": first["certificate"]}).to_string()),
        )
        .await;
    assert_eq!(copy.status, 400, "{}", copy.body);
    assert_eq!(codes(&copy), vec![1220]);
}

#[tokio::test]
async fn csrd_batch_uploads_certificates_from_jsonl_or_a_directory_and_reports_each() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let ca = TestCa::new();
    let dir = std::env::temp_dir().join(format!("csrd-certs-{}", uuid::Uuid::new_v4().simple()));
    let pems = dir.join("pems");
    std::fs::create_dir_all(&pems).unwrap();
    let mut jsonl = String::new();
    let mut leaves = Vec::new();
    for i in 0..120 {
        let csr = new_csr(
            &app,
            &token,
            "accounts",
            ACCOUNT_A,
            &format!("c{i}.example.org"),
        )
        .await;
        let id = csr["id"].as_str().unwrap().to_owned();
        let leaf = ca.sign_between(csr["csr"].as_str().unwrap(), 2024, 2090);
        leaves.push((id, leaf));
    }
    for (i, (id, leaf)) in leaves.iter().enumerate() {
        if i < 100 {
            // Line 41 (index 40) carries the next line's certificate: not its CSR's key.
            let certificate = if i == 40 { &leaves[41].1 } else { leaf };
            jsonl.push_str(&format!(
                "{}\n",
                json!({"custom_csr_id": id, "certificate": certificate})
            ));
        } else {
            std::fs::write(pems.join(format!("{id}.pem")), leaf).unwrap();
        }
    }
    let input = dir.join("certs.jsonl");
    std::fs::write(&input, jsonl).unwrap();
    let (url, bearer) = (format!("http://{}", app.addr()), token.clone());
    let run = move |source: &std::path::Path, output: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_csrd"))
            .args(["batch", "--url", &url])
            .args(["--account", ACCOUNT_A, "--batch-size", "30"])
            .arg("--certificates")
            .arg(source)
            .arg("--output")
            .arg(output)
            .env("CSRD_TOKEN", &bearer)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap()
    };
    let out_path = dir.join("out.jsonl");
    let out = tokio::task::spawn_blocking({
        let (input, out_path) = (input.clone(), out_path.clone());
        let run = run.clone();
        move || run(&input, &out_path)
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "one line failed");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "99 created, 1 failed"
    );
    let lines: Vec<Value> = std::fs::read_to_string(&out_path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 100);
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(line["line"], i + 1);
        if i == 40 {
            assert_eq!(line["errors"][0]["code"], 1429, "{line}");
        } else {
            assert_eq!(line["custom_csr_id"], leaves[i].0.as_str(), "{line}");
            assert!(line["id"].is_string(), "{line}");
        }
    }

    let dir_out = dir.join("dir-out.jsonl");
    let out = tokio::task::spawn_blocking({
        let (pems, dir_out) = (pems.clone(), dir_out.clone());
        move || run(&pems, &dir_out)
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "20 created, 0 failed"
    );
    let listed = app
        .send(
            Method::GET,
            &path("accounts", ACCOUNT_A, "?per_page=5"),
            Auth::Bearer(&token),
            None,
        )
        .await;
    assert_eq!(listed.body["result_info"]["total_count"], 119);
    std::fs::remove_dir_all(dir).unwrap();
}
