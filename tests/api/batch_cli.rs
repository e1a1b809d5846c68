//! `csrd batch` against a running csrd: input lines in, one output line each, resumable after
//! a kill, and the same result through single creates when the API has no batches.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use csrd::auth::Permission;
use serde_json::{Value, json};
use tokio::process::Command;

use csrd_test_support::*;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");

/// `n` JSONL lines; line `bad_json` is not JSON, line `bad_san` has an invalid SAN (1-based).
fn input(dir: &Path, n: usize, bad_json: usize, bad_san: usize) -> std::path::PathBuf {
    let mut text = String::new();
    for line in 1..=n {
        let cn = format!("line{line}.example.com");
        let mut body = with(
            with(p256_body(), "common_name", json!(cn)),
            "sans",
            json!([cn]),
        );
        if line == bad_san {
            body["sans"] = json!(["not a host"]);
        }
        if line == bad_json {
            text.push_str("{oops\n");
        } else {
            text.push_str(&format!("{body}\n"));
        }
    }
    let path = dir.join("input.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

fn batch_command(
    app: &TestApp,
    token: &str,
    input: &Path,
    output: &Path,
    extra: &[&str],
) -> Command {
    let mut cmd = Command::new(CSRD);
    cmd.args(["batch", "--url", &format!("http://{}", app.addr())])
        .args(["--account", ACCOUNT_A])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(output)
        .args(extra)
        .env("CSRD_TOKEN", token)
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    cmd
}

fn read_output(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Every input line has its output line, in order; the good ones a distinct CSR id.
fn check_output(lines: &[Value], n: usize, bad: &[usize]) -> HashSet<String> {
    assert_eq!(lines.len(), n, "one output line per input line");
    let mut ids = HashSet::new();
    for (i, out) in lines.iter().enumerate() {
        let line = i + 1;
        assert_eq!(out["line"], line, "input order");
        if bad.contains(&line) {
            assert!(
                out["errors"].as_array().is_some_and(|e| !e.is_empty()),
                "{out}"
            );
        } else {
            assert_eq!(
                out["common_name"],
                format!("line{line}.example.com"),
                "{out}"
            );
            assert!(
                ids.insert(out["id"].as_str().unwrap().to_owned()),
                "a CSR id twice"
            );
        }
    }
    ids
}

#[tokio::test]
async fn a_run_killed_midway_and_resumed_ends_with_exactly_one_csr_per_line() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let dir = tempdir();
    let (n, bad) = (1200, [5, 700]);
    let input = input(dir.path(), n, bad[0], bad[1]);
    let output = dir.path().join("out.jsonl");
    let partial = dir.path().join("out.jsonl.partial");

    // Small batches, one at a time, so the kill lands between them.
    let small = ["--batch-size", "100", "--concurrency", "1"];
    let mut first = batch_command(&app, &token, &input, &output, &small)
        .spawn()
        .unwrap();
    eventually_within(
        "some batches to finish",
        Duration::from_secs(60),
        || async {
            let settled = std::fs::read_to_string(&partial).map_or(0, |t| t.lines().count());
            (settled >= 200).then_some(())
        },
    )
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    assert!(!output.exists(), "no output before the run is complete");

    let resumed = batch_command(&app, &token, &input, &output, &small)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&resumed.stdout);
    let stderr = String::from_utf8_lossy(&resumed.stderr);
    assert!(stderr.contains("resuming"), "{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some(format!("{} created, 2 failed", n - 2).as_str()),
        "{stdout}\n{stderr}"
    );
    assert!(
        !partial.exists(),
        "the state file is gone once the output is written"
    );
    let ids = check_output(&read_output(&output), n, &bad);
    assert_eq!(
        app.row_count().await,
        (n - 2) as i64,
        "exactly one CSR per good line"
    );
    assert_eq!(ids.len(), n - 2);

    // A run of a finished input creates nothing new: the derived keys find the same batches.
    let again = batch_command(&app, &token, &input, &output, &small)
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&again.stdout).lines().last(),
        Some(format!("{} created, 2 failed", n - 2).as_str())
    );
    assert_eq!(check_output(&read_output(&output), n, &bad), ids);
    assert_eq!(app.row_count().await, (n - 2) as i64);
}

#[tokio::test]
async fn without_a_batch_api_it_falls_back_to_single_creates_with_the_same_guarantees() {
    let app = spawn_app_with(|s| s.batch_api = false).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let dir = tempdir();
    let (n, bad) = (40, [3, 9]);
    let input = input(dir.path(), n, bad[0], bad[1]);
    let output = dir.path().join("out.jsonl");
    let run = batch_command(&app, &token, &input, &output, &[])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("no batch endpoint"), "{stderr}");
    assert_eq!(
        stdout.lines().last(),
        Some(format!("{} created, 2 failed", n - 2).as_str()),
        "{stderr}"
    );
    let outputs = read_output(&output);
    check_output(&outputs, n, &bad);
    assert_eq!(
        outputs[8]["errors"][0]["code"], 1412,
        "the API's own error for the line"
    );
    assert_eq!(app.row_count().await, (n - 2) as i64);
}

#[tokio::test]
async fn csv_input_with_semicolon_separated_sans() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let dir = tempdir();
    let input = dir.path().join("input.csv");
    std::fs::write(
        &input,
        "common_name,sans,country,state,locality,organization,key_type\n\
         a.example.com,a.example.com;www.a.example.com,US,California,SF,Acme,p256v1\n\
         b.example.com,b.example.com,US,California,SF,Acme,p256v1\n",
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let run = batch_command(&app, &token, &input, &output, &[])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).lines().last(),
        Some("2 created, 0 failed"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outputs = read_output(&output);
    assert_eq!(outputs[0]["line"], 2, "line numbers name the file's lines");
    assert_eq!(
        outputs[0]["sans"],
        json!(["a.example.com", "www.a.example.com"])
    );
}

struct TempDir(std::path::PathBuf);

impl TempDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("csrd-batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
