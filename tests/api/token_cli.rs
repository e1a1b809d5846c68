//! Token and legacy-key lifecycle from the command line: list (never a secret), revoke.

use reqwest::Method;

use csrd_test_support::process::{csrd_command, token_create_args, user_create_args};
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
    let app = spawn_in_memory_with(|s| s.ingress.credential_cache_ms = 0).await;
    let (ok, token) = csrd(
        &app,
        &token_create_args(ACCOUNT_A, "read", &["--name", "ci"]),
    )
    .await;
    assert!(ok);
    let token = token.trim().to_owned();
    let (ok, key) = csrd(&app, &user_create_args("Ops@Example.com", ACCOUNT_A)).await;
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

async fn csrd_failing(app: &TestApp, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = csrd_command(CSRD, &app.iso, args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "csrd {args:?} succeeded");
    assert!(
        !stderr.contains("panicked"),
        "csrd {args:?} panicked: {stderr}"
    );
    stderr
}

#[tokio::test]
async fn operator_strings_that_would_forge_lines_are_refused() {
    let app = spawn_in_memory().await;
    let create = token_create_args(ACCOUNT_A, "read", &[]);
    let with = |extra: &[&'static str]| [&create[..], extra].concat();
    csrd_failing(&app, &with(&["--name", "ci\nforged line"]), &[]).await;
    csrd_failing(&app, &with(&["--name", "a\u{1b}[2Jb"]), &[]).await;
    let stderr = csrd_failing(&app, &with(&["--expires-in-days", "99999999"]), &[]).await;
    assert!(stderr.contains("expires-in-days"), "{stderr}");
    csrd_failing(
        &app,
        &user_create_args("ops@example.com\nx", ACCOUNT_A),
        &[],
    )
    .await;
    let stderr = csrd_failing(&app, &create, &[("CSRD_OPERATOR", "alice\tbob")]).await;
    assert!(stderr.contains("operator name"), "{stderr}");
    let (ok, _) = csrd(&app, &with(&["--expires-in-days", "36500", "--name", "ok"])).await;
    assert!(ok);
}

#[tokio::test]
async fn plain_listings_escape_control_characters_stored_before_they_were_refused() {
    let app = spawn_in_memory().await;
    let (ok, _) = csrd(
        &app,
        &token_create_args(ACCOUNT_A, "read", &["--name", "x"]),
    )
    .await;
    assert!(ok);
    let client = app.pool.get().await.unwrap();
    client
        .execute(
            "UPDATE api_tokens SET name = E'evil\\nFORGED\\tline\\x1b[31m'",
            &[],
        )
        .await
        .unwrap();
    client
        .execute(
            "INSERT INTO audit_log (action, outcome, actor_kind, actor, target)
             VALUES ('token.create', 'ok', 'operator', E'mallory\\nFORGED', E'a\\rb')",
            &[],
        )
        .await
        .unwrap();
    let (_, tokens) = csrd(&app, &["token", "list"]).await;
    assert_eq!(tokens.lines().count(), 1, "{tokens}");
    assert!(
        tokens.contains("evil\\nFORGED\\tline\\u{1b}[31m"),
        "{tokens}"
    );
    let (_, audit) = csrd(&app, &["audit"]).await;
    assert!(
        !audit.contains('\r') && !audit.contains('\u{1b}'),
        "{audit}"
    );
    assert!(audit.contains("mallory\\nFORGED"), "{audit}");
    assert!(!audit.lines().any(|l| l.starts_with("FORGED")), "{audit}");
}
