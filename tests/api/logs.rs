//! The log as a sink that is not a terminal sees it: `csrd serve` with stderr in a file and a
//! trace collector that is down, then up.

use std::process::Stdio;
use std::time::Duration;

use csrd_test_support::process::{Proc, csrd_command, free_port, wait_ready};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

/// A stand-in OTLP/HTTP collector on `port`: accepts every export with an empty 200.
async fn collector(port: u16) -> tokio::task::JoinHandle<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("the collector's port is free");
    let app = axum::Router::new().fallback(|| async { axum::http::StatusCode::OK });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    })
}

#[tokio::test]
async fn an_unreachable_collector_is_reported_once_and_its_return_once_without_colours() {
    let iso = Isolation::new().await;
    let (listen, admin, collector_port) = (free_port(), free_port(), free_port());
    let log_path = std::env::temp_dir().join(format!("csrd-logs-{}.log", iso.prefix));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = csrd_command(CSRD, &iso, &["serve"]);
    cmd.env("CSRD_LISTEN", format!("127.0.0.1:{listen}"))
        .env("CSRD_ADMIN_LISTEN", format!("127.0.0.1:{admin}"))
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{collector_port}"),
        )
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("RUST_LOG", "info")
        .env_remove("CSRD_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::from(log));
    let _csrd = Proc(cmd.spawn().expect("csrd binary runs"));
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{listen}");
    wait_ready(&http, &base).await;
    let metrics = format!("http://127.0.0.1:{admin}/metrics");
    let read_log = || std::fs::read_to_string(&log_path).unwrap();

    // Requests make spans; with nothing on the collector's port every export fails.
    eventually("three failed exports counted", || async {
        let _ = http.get(format!("{base}/readyz")).send().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let text = http.get(&metrics).send().await.ok()?.text().await.ok()?;
        let failed = counter(&text, "csrd_trace_exports_failed_total")?;
        (failed >= 3.0).then_some(())
    })
    .await;

    let _collector = collector(collector_port).await;
    eventually("the collector's return to be logged", || async {
        let _ = http.get(format!("{base}/readyz")).send().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        read_log()
            .contains("trace collector reachable again")
            .then_some(())
    })
    .await;

    let text = read_log();
    let _ = std::fs::remove_file(&log_path);
    assert_eq!(
        text.matches("trace collector unreachable").count(),
        1,
        "one WARN for the whole outage:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("trace collector unreachable")),
        "{text}"
    );
    assert!(
        !text.contains("ExportError") && !text.contains("ERROR"),
        "the SDK's per-export ERROR is gone:\n{text}"
    );
    assert!(
        !text.contains('\u{1b}'),
        "no ANSI colour codes when stderr is not a terminal:\n{text}"
    );
}

/// The value of an unlabelled counter in Prometheus text.
fn counter(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}
