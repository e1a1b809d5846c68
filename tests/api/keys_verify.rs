//! `csrd keys verify` proves every stored key belongs to its CSR, and catches each kind of
//! tampering: ciphertexts moved between rows, altered bytes, a missing KEK, a wrong KEK under
//! a known id (refused before anything is read), a key that decrypts but is not the CSR's.

use csrd::auth::Permission;
use csrd::crypto::{KekId, Keyring};
use tokio::process::Command;

use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

pub(crate) struct Verified {
    pub(crate) success: bool,
    pub(crate) last_line: String,
    pub(crate) stderr: String,
}

pub(crate) async fn verify(app: &TestApp, keks: &str, extra: &[&str]) -> Verified {
    let out = Command::new(CSRD)
        .args(["keys", "verify"])
        .args(extra)
        .env("DATABASE_URL", &app.iso.database_url)
        .env("CSRD_KEKS", keks)
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    Verified {
        success: out.status.success(),
        last_line: stdout.lines().last().unwrap_or_default().to_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sql(app: &TestApp, statement: &str) {
    app.pool
        .get()
        .await
        .unwrap()
        .batch_execute(statement)
        .await
        .unwrap();
}

/// Gives each of account A's two P-256 rows the other's `columns` (`col = o.col, …`, where
/// `o` is the other row's original).
async fn swap_between_two_p256_rows(app: &TestApp, columns: &str) {
    sql(
        app,
        &format!(
            "WITH pair AS (SELECT id, row_number() OVER (ORDER BY id) AS n FROM custom_csrs
                           WHERE owner_id = '{ACCOUNT_A}' AND key_type = 'p256v1')
             UPDATE custom_csrs c SET {columns}
             FROM pair p, pair q, originals o
             WHERE c.id = p.id AND q.n = 3 - p.n AND o.id = q.id"
        ),
    )
    .await;
}

/// Puts every row back as it was created.
async fn restore(app: &TestApp) {
    sql(
        app,
        "UPDATE custom_csrs c SET wrapped_dek = o.wrapped_dek, dek_nonce = o.dek_nonce,
             key_nonce = o.key_nonce, key_ciphertext = o.key_ciphertext, csr_pem = o.csr_pem,
             kek_id = o.kek_id
         FROM originals o WHERE o.id = c.id",
    )
    .await;
}

#[tokio::test]
async fn keys_verify_catches_every_kind_of_tampering() {
    let app = spawn_app().await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    for (owner, token, body) in [
        (ACCOUNT_A, &a, p256_body()),
        (ACCOUNT_A, &a, p256_body()),
        (ACCOUNT_A, &a, example_body()),
        (ACCOUNT_B, &b, p256_body()),
        (ACCOUNT_B, &b, example_body()),
    ] {
        let created = app
            .create("accounts", owner, Auth::Bearer(token), &body)
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
    }
    sql(&app, "CREATE TABLE originals AS SELECT * FROM custom_csrs").await;
    let keks = app.iso.keks.clone();

    let clean = verify(&app, &keks, &[]).await;
    assert!(clean.success, "{}", clean.stderr);
    assert_eq!(clean.last_line, "5 verified, 0 failed");
    let one_tenant = verify(&app, &keks, &["--account", ACCOUNT_B]).await;
    assert_eq!(one_tenant.last_line, "2 verified, 0 failed");
    let sample = verify(&app, &keks, &["--sample", "3"]).await;
    assert_eq!(sample.last_line, "3 verified, 0 failed");

    // Two P-256 rows of account A swap their sealed keys.
    swap_between_two_p256_rows(
        &app,
        "wrapped_dek = o.wrapped_dek, dek_nonce = o.dek_nonce, key_nonce = o.key_nonce,
         key_ciphertext = o.key_ciphertext",
    )
    .await;
    let moved = verify(&app, &keks, &[]).await;
    assert!(!moved.success);
    assert_eq!(moved.last_line, "3 verified, 2 failed");
    assert!(
        moved.stderr.contains("could not be unwrapped"),
        "{}",
        moved.stderr
    );
    restore(&app).await;

    // One byte of one ciphertext flipped.
    sql(
        &app,
        "UPDATE custom_csrs SET key_ciphertext = set_byte(key_ciphertext, 10,
             get_byte(key_ciphertext, 10) # 1)
         WHERE id = (SELECT min(id::text)::uuid FROM custom_csrs)",
    )
    .await;
    let altered = verify(&app, &keks, &[]).await;
    assert_eq!(altered.last_line, "4 verified, 1 failed");
    assert!(
        altered.stderr.contains("could not be decrypted"),
        "{}",
        altered.stderr
    );
    restore(&app).await;

    // The CSRs of the two P-256 rows of account A swapped: each key decrypts, neither matches.
    swap_between_two_p256_rows(&app, "csr_pem = o.csr_pem").await;
    let mismatched = verify(&app, &keks, &[]).await;
    assert_eq!(mismatched.last_line, "3 verified, 2 failed");
    assert!(
        mismatched.stderr.contains("does not match the CSR"),
        "{}",
        mismatched.stderr
    );
    restore(&app).await;

    // A row claiming a KEK that is not configured.
    sql(
        &app,
        "UPDATE custom_csrs SET kek_id = 'retired-kek'
         WHERE id = (SELECT min(id::text)::uuid FROM custom_csrs)",
    )
    .await;
    let missing = verify(&app, &keks, &[]).await;
    assert_eq!(missing.last_line, "4 verified, 1 failed");
    assert!(missing.stderr.contains("retired-kek"), "{}", missing.stderr);
    restore(&app).await;

    // Another key under the KEK id the rows were sealed with: refused before reading a row.
    let wrong = Keyring::generate_entry(&KekId::parse("test-kek").unwrap()).to_string();
    let refused = verify(&app, &wrong, &[]).await;
    assert!(!refused.success);
    assert!(
        !refused.last_line.contains("verified"),
        "{}",
        refused.last_line
    );
    assert!(
        refused.stderr.contains("does not match"),
        "{}",
        refused.stderr
    );

    let again = verify(&app, &keks, &[]).await;
    assert_eq!(again.last_line, "5 verified, 0 failed");
    // Key material never appears in what the command prints.
    assert!(!moved.stderr.contains("BEGIN PRIVATE KEY"));
}

#[tokio::test]
async fn kek_status_counts_the_records_each_kek_wraps() {
    let app = spawn_app().await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    for _ in 0..3 {
        let created = app
            .create("accounts", ACCOUNT_A, Auth::Bearer(&a), &p256_body())
            .await;
        assert_eq!(created.status, 201);
    }
    let database_url = app.iso.database_url.clone();
    let status = |keks: String| {
        let database_url = database_url.clone();
        async move {
            let out = Command::new(CSRD)
                .args(["kek", "status"])
                .env("DATABASE_URL", database_url)
                .env("CSRD_KEKS", keks)
                .output()
                .await
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
            )
        }
    };
    let (ok, now) = status(app.iso.keks.clone()).await;
    assert!(ok);
    assert!(
        now.contains("test-kek\t3 records\tcheck value stored\tactive"),
        "{now}"
    );

    // A new KEK promoted to first place: it encrypts from now on, the old one still decrypts.
    let next = Keyring::generate_entry(&KekId::parse("next-kek").unwrap()).to_string();
    let (ok, promoted) = status(format!("{next},{}", app.iso.keks)).await;
    assert!(ok);
    assert!(
        promoted.contains("next-kek\t0 records\tno check value\tconfigured, never used"),
        "{promoted}"
    );
    assert!(
        promoted.contains("test-kek\t3 records\tcheck value stored\tconfigured (decrypts)"),
        "{promoted}"
    );

    // Dropping the old KEK while it still wraps records is visible before anything breaks.
    let (_, dropped) = status(next).await;
    assert!(
        dropped.contains("test-kek\t3 records\tcheck value stored\tNOT CONFIGURED"),
        "{dropped}"
    );

    // The nonce budget: every wrap counted, and a warning from a quarter of 2^32 on.
    assert!(
        now.contains("test-kek\tnonce budget: 3 wraps, 0.0000% of 2^32\n"),
        "{now}"
    );
    app.pool
        .get()
        .await
        .unwrap()
        .batch_execute("UPDATE kek_usage SET wraps = wraps + 1073741824 WHERE kek_id = 'test-kek' AND shard = (SELECT min(shard) FROM kek_usage WHERE kek_id = 'test-kek')")
        .await
        .unwrap();
    let (_, worn) = status(app.iso.keks.clone()).await;
    assert!(
        worn.contains("test-kek\tnonce budget: 1073741827 wraps, 25.0000% of 2^32 - ROTATE"),
        "{worn}"
    );

    let wrong = Keyring::generate_entry(&KekId::parse("test-kek").unwrap()).to_string();
    let (ok, _) = status(wrong).await;
    assert!(!ok, "a wrong key under a known id is refused");
}

#[tokio::test]
async fn keys_verify_checks_each_custom_certificate_against_the_decrypted_key() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let ca = TestCa::new();
    for name in ["one.example.org", "two.example.org"] {
        let body = with(p256_body(), "sans", serde_json::json!([name]));
        let csr = app
            .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &body)
            .await;
        assert_eq!(csr.status, 201, "{}", csr.body);
        let uploaded = app
            .send(
                reqwest::Method::POST,
                &format!("/client/v4/accounts/{ACCOUNT_A}/custom_certificates"),
                Auth::Bearer(&token),
                Some(
                    serde_json::json!({
                        "certificate": ca.sign(csr.body["result"]["csr"].as_str().unwrap()),
                        "custom_csr_id": csr.body["result"]["id"],
                    })
                    .to_string(),
                ),
            )
            .await;
        assert_eq!(uploaded.status, 200, "{}", uploaded.body);
    }
    let keks = app.iso.keks.clone();
    let clean = verify(&app, &keks, &[]).await;
    assert!(clean.success, "{}", clean.stderr);
    assert_eq!(clean.last_line, "2 verified, 0 failed");

    // The two certificates trade places in the table: each is now another key's.
    sql(
        &app,
        "WITH pair AS (SELECT id, certificate, row_number() OVER (ORDER BY id) AS n
                       FROM custom_certificates)
         UPDATE custom_certificates c SET certificate = q.certificate
         FROM pair p, pair q WHERE c.id = p.id AND q.n = 3 - p.n",
    )
    .await;
    let swapped = verify(&app, &keks, &[]).await;
    assert!(!swapped.success);
    assert_eq!(swapped.last_line, "0 verified, 2 failed");
    assert!(
        swapped.stderr.contains("custom certificate"),
        "{}",
        swapped.stderr
    );
}

#[tokio::test]
async fn one_tenants_keys_are_walked_a_page_at_a_time_each_once_in_creation_order() {
    let app = spawn_app().await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let mut mine = Vec::new();
    for i in 0..7 {
        let (owner, token) = if i % 3 == 2 {
            (ACCOUNT_B, &b)
        } else {
            (ACCOUNT_A, &a)
        };
        let created = app
            .create("accounts", owner, Auth::Bearer(token), &p256_body())
            .await;
        assert_eq!(created.status, 201, "{}", created.body);
        if owner == ACCOUNT_A {
            mine.push(created.body["result"]["id"].as_str().unwrap().to_owned());
        }
    }
    // Rows created in one batch chunk share a creation time: the walk must not skip or repeat
    // them at a page boundary.
    sql(
        &app,
        &format!(
            "UPDATE custom_csrs SET created_at = '2026-01-01T00:00:00Z' WHERE id IN
                 (SELECT id FROM custom_csrs WHERE owner_id = '{ACCOUNT_A}'
                  ORDER BY created_at, id LIMIT 3)"
        ),
    )
    .await;
    let owner = csrd::domain::Owner::parse(csrd::domain::OwnerKind::Account, ACCOUNT_A).unwrap();
    let client = app.pool.get().await.unwrap();
    let (mut walked, mut after) = (Vec::new(), None);
    loop {
        let page = csrd::db::csrs::stored_keys_after(&**client, Some(&owner), after, 2)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.cursor());
        walked.extend(page.iter().map(|k| k.id.0.to_string()));
    }
    let mut expected = mine.clone();
    expected.sort();
    let mut got = walked.clone();
    got.sort();
    assert_eq!(got, expected, "each of A's keys once, none of B's");
    let in_order = csrd::db::csrs::stored_keys_after(&**client, Some(&owner), None, 100)
        .await
        .unwrap();
    let order: Vec<String> = in_order.iter().map(|k| k.id.0.to_string()).collect();
    assert_eq!(walked, order, "pages join into the creation order");
    let one_tenant = verify(&app, &app.iso.keks.clone(), &["--account", ACCOUNT_A]).await;
    assert_eq!(one_tenant.last_line, "5 verified, 0 failed");
}
