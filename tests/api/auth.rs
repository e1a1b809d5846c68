use csrd::auth::Permission;

use csrd_test_support::*;

#[tokio::test]
async fn auth_matrix_for_create() {
    let app = spawn_in_memory().await;
    let write_a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let read_a = app.token(&[ACCOUNT_A], &[], Permission::Read).await;
    let write_b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let zone = app.token(&[], &[ZONE_A], Permission::Write).await;
    let legacy = app.legacy_key("owner@example.com", &[ACCOUNT_A], &[]).await;
    let unknown = csrd::auth::ApiToken::generate();

    let body = p256_body();
    let create = |auth| app.create("accounts", ACCOUNT_A, auth, &body);
    create(Auth::None).await.assert_failure(400, 9106);
    create(Auth::Header("Authorization", "Token abc"))
        .await
        .assert_failure(400, 6003);
    create(Auth::Header("Authorization", "Bearer not-a-token"))
        .await
        .assert_failure(400, 6003);
    create(Auth::Bearer(unknown.reveal()))
        .await
        .assert_failure(403, 9109);
    create(Auth::Bearer(&read_a))
        .await
        .assert_failure(403, 10000);
    create(Auth::Bearer(&write_b))
        .await
        .assert_failure(403, 10000);
    create(Auth::Bearer(&zone)).await.assert_failure(403, 10000);
    create(Auth::Legacy("someone-else@example.com", &legacy))
        .await
        .assert_failure(403, 9109);
    create(Auth::Header("X-Auth-Email", "owner@example.com"))
        .await
        .assert_failure(400, 9106);
    create(Auth::Header("X-Auth-Key", &legacy))
        .await
        .assert_failure(400, 9106);
    create(Auth::Legacy("not-an-email", &legacy))
        .await
        .assert_failure(400, 6003);
    let wrong_key = csrd::auth::ApiKey::generate();
    create(Auth::Legacy("owner@example.com", wrong_key.reveal()))
        .await
        .assert_failure(403, 9109);

    assert_eq!(create(Auth::Bearer(&write_a)).await.status, 201);
    assert_eq!(
        create(Auth::Legacy("owner@example.com", &legacy))
            .await
            .status,
        201
    );
    assert_eq!(
        create(Auth::Legacy("OWNER@example.com", &legacy))
            .await
            .status,
        201,
        "emails are case-insensitive"
    );
    let zone_ok = app
        .create("zones", ZONE_A, Auth::Bearer(&zone), &p256_body())
        .await;
    assert_eq!(zone_ok.status, 201, "{}", zone_ok.body);
}

#[tokio::test]
async fn a_token_with_a_tampered_secret_is_refused() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    // Same lookup id, different secret part.
    let mut forged: Vec<u8> = token.clone().into_bytes();
    let last = forged.len() - 1;
    forged[last] = if forged[last] == b'a' { b'b' } else { b'a' };
    let forged = String::from_utf8(forged).unwrap();
    app.create("accounts", ACCOUNT_A, Auth::Bearer(&forged), &p256_body())
        .await
        .assert_failure(403, 9109);
}

#[tokio::test]
async fn revoked_and_expired_tokens_are_refused() {
    let app = spawn_in_memory().await;
    let revoked = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let expired = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE lookup_id = $1",
            &[&&revoked[..8]],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE api_tokens SET expires_at = now() - interval '1 minute' WHERE lookup_id = $1",
            &[&&expired[..8]],
        )
        .await
        .unwrap();
    app.create("accounts", ACCOUNT_A, Auth::Bearer(&revoked), &p256_body())
        .await
        .assert_failure(403, 9109);
    app.create("accounts", ACCOUNT_A, Auth::Bearer(&expired), &p256_body())
        .await
        .assert_failure(403, 9109);
}

#[tokio::test]
async fn credentials_are_stored_only_as_hashes() {
    let app = spawn_in_memory().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let key = app.legacy_key("owner@example.com", &[ACCOUNT_A], &[]).await;
    let dump = pg_dump(&app.iso.database_url);
    assert!(!dump.contains(&token), "token in the database dump");
    assert!(!dump.contains(&key), "API key in the database dump");
    assert!(
        dump.contains(&token[..8]),
        "the lookup id is stored (sanity check that the dump has the table)"
    );
}

#[tokio::test]
async fn a_cached_credential_stops_working_once_its_cache_entry_expires() {
    let app = spawn_in_memory_with(|s| s.ingress.credential_cache_ms = 300).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    let list = || app.send(reqwest::Method::GET, &path, Auth::Bearer(&token), None);
    assert_eq!(list().await.status, 200, "verified, and now cached");
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE api_tokens SET revoked_at = now() WHERE lookup_id = $1",
            &[&&token[..8]],
        )
        .await
        .unwrap();
    // The documented bound is the cache lifetime: past it, the revocation holds.
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    list().await.assert_failure(403, 9109);
}
