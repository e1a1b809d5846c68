//! Compatibility proven with clients nobody here wrote: the official Cloudflare Python and
//! TypeScript SDKs, and schemathesis driven by Cloudflare's own OpenAPI document (vendored in
//! `compat/cloudflare/`). `scripts/test` installs the Python side into `.venv` and sets
//! `CSRD_COMPAT_PYTHON`, and the TypeScript SDK into `compat/ts/node_modules` and sets
//! `CSRD_COMPAT_NODE`.

use csrd::auth::Permission;

use csrd_test_support::*;

fn python() -> String {
    std::env::var("CSRD_COMPAT_PYTHON").unwrap_or_else(|_| {
        panic!("CSRD_COMPAT_PYTHON is not set: run the suite through scripts/test, which installs compat/requirements.txt into .venv")
    })
}

fn node() -> String {
    std::env::var("CSRD_COMPAT_NODE").unwrap_or_else(|_| {
        panic!("CSRD_COMPAT_NODE is not set: run the suite through scripts/test, which installs compat/ts's packages")
    })
}

/// The credentials and ids every compatibility client is handed, as environment variables.
async fn client_env(app: &TestApp) -> Vec<(&'static str, String)> {
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    let read_token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Read).await;
    let key = app.legacy_key("sdk@example.com", &[ACCOUNT_A], &[]).await;
    vec![
        ("CSRD_BASE_URL", app.url("")),
        ("CSRD_ACCOUNT", ACCOUNT_A.to_string()),
        ("CSRD_ZONE", ZONE_A.to_string()),
        ("CSRD_TOKEN", token),
        ("CSRD_READ_TOKEN", read_token),
        ("CSRD_EMAIL", "sdk@example.com".to_string()),
        ("CSRD_KEY", key),
    ]
}

/// Runs a compatibility client while csrd keeps serving on this runtime (tokio's Command), and
/// fails with everything it printed.
async fn run_client(mut command: tokio::process::Command, what: &str) {
    let out = command.output().await.expect("the client runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "{what} failed:\n{text}");
}

async fn run_pytest(app: &TestApp, file: &str) {
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = format!("{root}/compat/cloudflare/custom-csrs.openapi.json");
    assert!(
        std::path::Path::new(&spec).exists(),
        "Cloudflare's OpenAPI document is expected at {spec}"
    );
    let mut pytest = tokio::process::Command::new(python());
    pytest
        .args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", file])
        .current_dir(format!("{root}/compat"))
        .envs(client_env(app).await)
        .env("CSRD_SPEC", &spec);
    run_client(pytest, &format!("pytest {file}")).await;
}

#[tokio::test]
async fn official_cloudflare_python_sdk_round_trip() {
    let app = spawn_app().await;
    run_pytest(&app, "test_sdk.py").await;
}

#[tokio::test]
async fn official_cloudflare_python_sdk_custom_certificates() {
    let app = spawn_app().await;
    run_pytest(&app, "test_sdk_certificates.py").await;
}

#[tokio::test]
async fn schemathesis_against_cloudflares_openapi_document() {
    let app = spawn_app().await;
    run_pytest(&app, "test_schema.py").await;
}

#[tokio::test]
async fn official_cloudflare_typescript_sdk_csrs_and_certificates() {
    let app = spawn_app().await;
    let mut node_test = tokio::process::Command::new(node());
    node_test
        .args(["--test", "--test-reporter=spec", "sdk.test.mjs"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/compat/ts"))
        .envs(client_env(&app).await);
    run_client(node_test, "node --test compat/ts/sdk.test.mjs").await;
}
