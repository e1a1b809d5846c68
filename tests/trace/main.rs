//! Traces and logs: one create, and one batch chunk, are each one trace from the HTTP request
//! through the job message to the worker (spans collected by an in-memory exporter), and log
//! lines carry the trace id, as text or as JSON (`CSRD_LOG_FORMAT=json`).
//!
//! A test binary of its own: the exporter is installed process-wide before the app starts.

// Tests make and present throw-away credentials: revealing them is what they are for.
#![allow(clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::io::BufRead;
use std::process::Stdio;
use std::time::Duration;

use csrd::auth::Permission;
use opentelemetry::trace::TraceId;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};
use serde_json::Value;

use csrd_test_support::process::{
    Proc, csrd_command, free_port, run_ok, wait_ready, write_token_for,
};
use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

fn attribute(span: &SpanData, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| kv.value.to_string())
}

/// The trace of the one `http_request` span for `POST path`.
fn request_trace(spans: &[SpanData], path: &str) -> Option<TraceId> {
    spans
        .iter()
        .find(|s| {
            s.name == "http_request"
                && attribute(s, "method").as_deref() == Some("POST")
                && attribute(s, "uri").as_deref() == Some(path)
        })
        .map(|s| s.span_context.trace_id())
}

fn names_in(spans: &[SpanData], trace: TraceId) -> BTreeSet<String> {
    spans
        .iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .map(|s| s.name.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_and_a_batch_chunk_are_each_one_trace_from_ingress_to_worker() {
    let exporter = InMemorySpanExporter::default();
    csrd::telemetry::init_with_exporter(exporter.clone());
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;

    let created = app
        .create("accounts", ACCOUNT_A, Auth::Bearer(&token), &p256_body())
        .await;
    assert_eq!(created.status, 201);
    let batch = app
        .submit_batch(ACCOUNT_A, &token, vec![p256_body(), p256_body()])
        .await;
    assert_eq!(batch.status, 202);

    let create_path = format!("/client/v4/accounts/{ACCOUNT_A}/custom_csrs");
    let batch_path = format!("{create_path}/batches");
    let worker_spans = [
        "create_chunk",
        "keygen_and_sign",
        "db_insert_chunk",
        "announce",
    ];
    for path in [&create_path, &batch_path] {
        let names = eventually("the worker's spans to be exported", || async {
            let spans = exporter.get_finished_spans().unwrap();
            let trace = request_trace(&spans, path)?;
            let names = names_in(&spans, trace);
            worker_spans
                .iter()
                .all(|w| names.contains(*w))
                .then_some(names)
        })
        .await;
        assert!(names.contains("http_request"), "{path}: {names:?}");
        // A single create's chunk is published in its request's trace (a batch's by the
        // dispatcher, in the batch's).
        if path == &create_path {
            assert!(names.contains("publish_chunk"), "{path}: {names:?}");
        }
    }
    // Two different traces: the batch's chunk did not join the create's.
    let spans = exporter.get_finished_spans().unwrap();
    assert_ne!(
        request_trace(&spans, &create_path),
        request_trace(&spans, &batch_path)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_trace_id_of_the_request() {
    let iso = Isolation::new().await;
    run_ok(CSRD, &iso, &["migrate"]);
    let token = write_token_for(CSRD, &iso, ACCOUNT_A);
    let listen = format!("127.0.0.1:{}", free_port());
    let mut cmd = csrd_command(CSRD, &iso, &["serve"]);
    cmd.env("CSRD_LISTEN", &listen)
        .env("CSRD_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut service = Proc(cmd.spawn().unwrap());
    let stderr = service.0.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let base = format!("http://{listen}");
    let http = reqwest::Client::new();
    wait_ready(&http, &base).await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let resp = http
        .post(format!("{base}/client/v4/accounts/{ACCOUNT_A}/custom_csrs"))
        .bearer_auth(&token)
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&p256_body())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &service.0.id().to_string()])
        .status();
    let _ = service.0.wait();
    let lines = lines.join().unwrap();

    let logs: Vec<Value> = lines
        .iter()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let in_trace: Vec<&Value> = logs
        .iter()
        .filter(|l| {
            l["spans"]
                .as_array()
                .is_some_and(|spans| spans.iter().any(|s| s["trace_id"] == trace))
        })
        .collect();
    assert!(
        in_trace
            .iter()
            .any(|l| l["fields"]["message"] == "create accepted"),
        "no ingress line names trace {trace}: {lines:#?}"
    );
}
