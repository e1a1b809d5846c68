//! Compatibility proven with clients nobody here wrote: the official Cloudflare Python SDK and
//! schemathesis driven by Cloudflare's own OpenAPI document (vendored in `compat/cloudflare/`). `scripts/test`
//! installs them into `.venv` and sets `CSRD_COMPAT_PYTHON`.

use csrd::auth::Permission;

use csrd_test_support::*;

fn python() -> String {
    std::env::var("CSRD_COMPAT_PYTHON").unwrap_or_else(|_| {
        panic!("CSRD_COMPAT_PYTHON is not set: run the suite through scripts/test, which installs compat/requirements.txt into .venv")
    })
}

async fn run_pytest(app: &TestApp, file: &str) {
    let token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Write).await;
    let read_token = app.token(&[ACCOUNT_A], &[ZONE_A], Permission::Read).await;
    let key = app.legacy_key("sdk@example.com", &[ACCOUNT_A], &[]).await;
    let root = env!("CARGO_MANIFEST_DIR");
    let spec = format!("{root}/compat/cloudflare/custom-csrs.openapi.json");
    assert!(
        std::path::Path::new(&spec).exists(),
        "Cloudflare's OpenAPI document is expected at {spec}"
    );
    // tokio's Command: csrd keeps serving on this runtime while pytest runs.
    let out = tokio::process::Command::new(python())
        .args(["-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", file])
        .current_dir(format!("{root}/compat"))
        .env("CSRD_BASE_URL", app.url(""))
        .env("CSRD_ACCOUNT", ACCOUNT_A)
        .env("CSRD_ZONE", ZONE_A)
        .env("CSRD_TOKEN", &token)
        .env("CSRD_READ_TOKEN", &read_token)
        .env("CSRD_EMAIL", "sdk@example.com")
        .env("CSRD_KEY", &key)
        .env("CSRD_SPEC", &spec)
        .output()
        .await
        .expect("python runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "pytest {file} failed:\n{text}");
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
