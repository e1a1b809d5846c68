//! TLS to the database and to the broker: the local Postgres (TLS on, self-signed certificate
//! for `localhost`) in every sslmode, and a RabbitMQ node of the test's own with an AMQPS
//! listener and a certificate from a CA made with rcgen. The whole service runs over both.

use csrd::auth::Permission;
use csrd::db::build_pool;

use csrd_test_support::rabbit_node::{RabbitNode, TestCa};
use csrd_test_support::*;

/// Whether the pooled connection to `url` is encrypted, or why it failed.
async fn encrypted(url: &str) -> Result<bool, String> {
    let pool = build_pool(url, 1, "csrd-tls-test").map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

/// The server's own certificate file (self-signed, so it is its own CA).
async fn server_certificate() -> String {
    let pool = build_pool(&admin_url(), 1, "csrd-tls-test").unwrap();
    let row = pool
        .get()
        .await
        .unwrap()
        .query_one("SELECT current_setting('ssl_cert_file')", &[])
        .await
        .unwrap();
    row.get(0)
}

/// The test database's URL on host `host` with extra parameters.
fn url_on(iso: &Isolation, host: &str, params: &str) -> String {
    let url = iso.database_url.replacen("127.0.0.1", host, 1);
    format!("{url}?{params}")
}

#[tokio::test]
async fn postgres_connections_honour_every_sslmode() {
    let iso = Isolation::new().await;
    let cert = server_certificate().await;
    let other_ca = std::env::temp_dir().join(format!("csrd-other-ca-{}.pem", iso.prefix));
    std::fs::write(&other_ca, TestCa::new().ca_pem).unwrap();
    let other_ca = other_ca.display().to_string();

    assert_eq!(
        encrypted(&url_on(&iso, "127.0.0.1", "sslmode=disable")).await,
        Ok(false)
    );
    assert_eq!(
        encrypted(&url_on(&iso, "127.0.0.1", "sslmode=require")).await,
        Ok(true)
    );
    // The certificate names localhost: verify-full passes there, verify-ca on any address.
    let full = format!("sslmode=verify-full&sslrootcert={cert}");
    assert_eq!(encrypted(&url_on(&iso, "localhost", &full)).await, Ok(true));
    let ca_only = format!("sslmode=verify-ca&sslrootcert={cert}");
    assert_eq!(
        encrypted(&url_on(&iso, "127.0.0.1", &ca_only)).await,
        Ok(true)
    );
    let wrong_name = encrypted(&url_on(&iso, "127.0.0.1", &full)).await;
    assert!(wrong_name.is_err(), "{wrong_name:?}");
    // Another CA: refused in every verifying mode, including require with a root certificate.
    for mode in ["verify-full", "verify-ca", "require"] {
        let params = format!("sslmode={mode}&sslrootcert={other_ca}");
        let refused = encrypted(&url_on(&iso, "localhost", &params)).await;
        assert!(refused.is_err(), "{mode}: {refused:?}");
    }
    let _ = std::fs::remove_file(&other_ca);
}

#[tokio::test]
async fn the_service_runs_over_tls_to_postgres_and_rabbitmq() {
    let ca = TestCa::new();
    let node = RabbitNode::start("tls", Some(&ca));
    let ca_file = node.dir.join("ca.pem").display().to_string();
    let amqps = format!(
        "amqps://guest:guest@localhost:{}/%2f?cacertfile={ca_file}",
        node.tls_port.unwrap()
    );
    // Without the CA the broker's certificate is refused.
    let untrusted = format!(
        "amqps://guest:guest@localhost:{}/%2f",
        node.tls_port.unwrap()
    );
    assert!(
        csrd::amqp::connect(&untrusted, "csrd-tls-test")
            .await
            .is_err()
    );

    let cert = server_certificate().await;
    let app = spawn_app_with(|s| {
        s.broker.amqp_url = amqps.clone();
        s.db.database_url = format!(
            "{}?sslmode=verify-full&sslrootcert={cert}",
            s.db.database_url.replacen("127.0.0.1", "localhost", 1)
        );
    })
    .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let created = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &p256_body())
        .await;
    assert_eq!(created.status, 201, "{}", created.body);

    // The jobs really went through the TLS node: its queues exist there.
    let queues = node.ctl(&["list_queues", "name", "--quiet"]);
    let queues = String::from_utf8_lossy(&queues.stdout);
    assert!(queues.contains(&app.iso.prefix), "{queues}");
    drop(app);
}
