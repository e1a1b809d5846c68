//! Token and legacy-key lifecycle from the command line: list (never a secret), revoke.

use reqwest::Method;

use csrd_test_support::process::csrd_command;
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

async fn csrd(app: &TestApp, args: &[&str]) -> (bool, String) {
    let out = csrd_command(CSRD, &app.iso, args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[tokio::test]
async fn tokens_and_users_are_listed_without_secrets_and_revoked() {
    let app = spawn_in_memory_with(|s| s.credential_cache_ms = 0).await;
    let (ok, token) = csrd(
        &app,
        &[
            "token",
            "create",
            "--account",
            ACCOUNT_A,
            "--permission",
            "read",
            "--name",
            "ci",
        ],
    )
    .await;
    assert!(ok);
    let token = token.trim().to_owned();
    let (ok, key) = csrd(
        &app,
        &[
            "user",
            "create",
            "--email",
            "Ops@Example.com",
            "--account",
            ACCOUNT_A,
        ],
    )
    .await;
    assert!(ok);
    let key = key.trim().to_owned();
    let list = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    let read = |auth| app.send(Method::GET, &list, auth, None);
    assert_eq!(read(Auth::Bearer(&token)).await.status, 200);
    assert_eq!(
        read(Auth::Legacy("ops@example.com", &key)).await.status,
        200
    );

    let (ok, tokens) = csrd(&app, &["token", "list", "--json"]).await;
    assert!(ok);
    let listed: serde_json::Value = serde_json::from_str(tokens.lines().next().unwrap()).unwrap();
    assert_eq!(listed["name"], "ci");
    assert_eq!(listed["accounts"][0], ACCOUNT_A);
    assert!(listed["revoked_at"].is_null());
    let (_, text) = csrd(&app, &["token", "list"]).await;
    let (_, users) = csrd(&app, &["user", "list"]).await;
    for shown in [&tokens, &text, &users] {
        assert!(
            !shown.contains(&token[8..]),
            "a token secret was listed: {shown}"
        );
        assert!(!shown.contains(&key), "a legacy key was listed: {shown}");
    }
    assert!(users.contains("ops@example.com"), "{users}");

    let id = listed["id"].as_str().unwrap();
    let (ok, said) = csrd(&app, &["token", "revoke", id]).await;
    assert!(ok, "{said}");
    read(Auth::Bearer(&token)).await.assert_failure(403, 9109);
    let (again, _) = csrd(&app, &["token", "revoke", id]).await;
    assert!(!again, "revoking twice says so");
    let (_, tokens) = csrd(&app, &["token", "list", "--json"]).await;
    assert!(tokens.contains("\"revoked_at\":\"20"), "{tokens}");

    let (ok, _) = csrd(&app, &["user", "revoke", "--email", "ops@example.com"]).await;
    assert!(ok);
    read(Auth::Legacy("ops@example.com", &key))
        .await
        .assert_failure(403, 9109);
}
