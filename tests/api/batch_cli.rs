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
        let mut body = named_body(&format!("line{line}.example.com"));
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
    let app = spawn_app_with(|s| s.ingress.batch_api = false).await;
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

fn good_line(line: usize) -> String {
    named_body(&format!("line{line}.example.com")).to_string()
}

/// A command that fails if it ever gets as far as the network: nothing listens there, and it
/// gives up after 2 s.
fn offline_command(input: &Path, output: &Path, extra: &[&str]) -> Command {
    let mut cmd = Command::new(CSRD);
    cmd.args([
        "batch",
        "--url",
        "http://127.0.0.1:9",
        "--account",
        ACCOUNT_A,
    ])
    .arg("--input")
    .arg(input)
    .arg("--output")
    .arg(output)
    .args(extra)
    .env("CSRD_CLIENT_RETRY_BUDGET_SECS", "2")
    .env("CSRD_TOKEN", "unused")
    .env("RUST_LOG", "warn")
    .kill_on_drop(true);
    cmd
}

async fn finish(mut cmd: Command) -> std::process::Output {
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("csrd batch still running after 60 s")
        .unwrap()
}

#[tokio::test]
async fn lines_that_are_not_utf8_or_too_long_fail_alone_and_the_rest_are_created() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let dir = tempdir();
    let mut bytes = Vec::new();
    bytes.extend(format!("{}\n", good_line(1)).into_bytes());
    bytes.extend(b"{\"common_name\": \"bad\xff.example.com\"}\n");
    // Valid JSON, but over the 1 MiB a line may hold: never parsed, never sent.
    let long = with(p256_body(), "organization", json!("x".repeat(1_500_000)));
    bytes.extend(format!("{long}\n").into_bytes());
    bytes.extend(format!("{}\n", good_line(4)).into_bytes());
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, bytes).unwrap();
    let output = dir.path().join("out.jsonl");
    let run = finish(batch_command(&app, &token, &input, &output, &[])).await;
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert_eq!(
        stdout.lines().last(),
        Some("2 created, 2 failed"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outputs = read_output(&output);
    assert_eq!(outputs[0]["common_name"], "line1.example.com");
    let message = |i: usize| {
        outputs[i]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert!(
        message(1).starts_with("line 2: not UTF-8"),
        "{}",
        message(1)
    );
    assert!(
        message(2).starts_with("line 3: longer than 1048576 bytes"),
        "{}",
        message(2)
    );
    assert_eq!(outputs[3]["common_name"], "line4.example.com");
    assert_eq!(app.row_count().await, 2);
}

#[tokio::test]
async fn a_jsonl_file_whose_first_line_is_broken_is_still_read_as_jsonl() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let dir = tempdir();
    let input = dir.path().join("input.jsonl");
    std::fs::write(
        &input,
        format!("common_name,sans\n{}\n{}\n", good_line(2), good_line(3)),
    )
    .unwrap();
    let output = dir.path().join("out.jsonl");
    let run = finish(batch_command(&app, &token, &input, &output, &[])).await;
    assert_eq!(
        String::from_utf8_lossy(&run.stdout).lines().last(),
        Some("2 created, 1 failed"),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let outputs = read_output(&output);
    assert!(
        outputs[0]["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("not valid JSON")
    );
    assert_eq!(outputs[2]["common_name"], "line3.example.com");
}

#[tokio::test]
async fn an_input_of_unknown_extension_needs_format() {
    let dir = tempdir();
    let input = dir.path().join("input.txt");
    std::fs::write(&input, format!("{}\n", good_line(1))).unwrap();
    let run = finish(offline_command(&input, &dir.path().join("out.jsonl"), &[])).await;
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("--format"), "{stderr}");
}

#[tokio::test]
async fn an_output_beside_a_tmp_input_leaves_the_input_alone() {
    let app = spawn_app().await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let dir = tempdir();
    // The output's temporary file was once `<output minus extension>.tmp`: this very input.
    let input = dir.path().join("x.tmp");
    let text = format!("{}\n{}\n", good_line(1), good_line(2));
    std::fs::write(&input, &text).unwrap();
    let output = dir.path().join("x.jsonl");
    let run = finish(batch_command(
        &app,
        &token,
        &input,
        &output,
        &["--format", "jsonl"],
    ))
    .await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&input).unwrap(),
        text,
        "the input is untouched"
    );
    assert_eq!(read_output(&output).len(), 2);
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(left.len(), 2, "no temporary file left: {left:?}");
}

#[tokio::test]
async fn an_output_or_state_file_that_is_the_input_is_refused() {
    let dir = tempdir();
    let text = format!("{}\n", good_line(1));
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, &text).unwrap();
    let run = finish(offline_command(&input, &input, &[])).await;
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("refusing to overwrite the input"),
        "{stderr}"
    );

    // The state file of `out.jsonl` is `out.jsonl.partial`.
    let partial_named = dir.path().join("out.jsonl.partial");
    std::fs::write(&partial_named, &text).unwrap();
    let run = finish(offline_command(
        &partial_named,
        &dir.path().join("out.jsonl"),
        &["--format", "jsonl"],
    ))
    .await;
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("the state file"));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), text);
    assert_eq!(std::fs::read_to_string(&partial_named).unwrap(), text);
}

#[tokio::test]
async fn a_state_file_is_not_reused_for_a_line_that_changed() {
    use sha2::{Digest, Sha256};
    let dir = tempdir();
    let input = dir.path().join("in.jsonl");
    let output = dir.path().join("out.jsonl");
    let partial = dir.path().join("out.jsonl.partial");
    let (one, two) = (good_line(1), good_line(2));
    // What a run of the input as it was recorded before it was interrupted.
    let mut state = String::new();
    for (line, text) in [(1, &one), (2, &two)] {
        let entry = json!({"line": line, "line_sha256": hex::encode(Sha256::digest(text)),
                           "output": {"line": line, "id": format!("csr-{line}")}});
        state.push_str(&format!("{entry}\n"));
    }
    std::fs::write(&partial, &state).unwrap();
    std::fs::write(&input, format!("{one}\n{}\n", good_line(22))).unwrap();
    let run = finish(offline_command(&input, &output, &[])).await;
    assert!(!run.status.success());
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(stderr.contains("line 2 of"), "{stderr}");
    assert!(stderr.contains("changed since"), "{stderr}");
    assert!(stderr.contains("delete"), "{stderr}");
    assert!(!output.exists());
    assert_eq!(
        std::fs::read_to_string(&partial).unwrap(),
        state,
        "kept as it was"
    );

    // Unchanged, it is reused: every line is settled, so nothing is asked of the API.
    std::fs::write(&input, format!("{one}\n{two}\n")).unwrap();
    let run = finish(offline_command(&input, &output, &[])).await;
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(read_output(&output)[1]["id"], "csr-2");

    // A state file of an earlier version, without hashes, is refused.
    std::fs::write(&partial, "{\"line\": 1, \"id\": \"csr-1\"}\n").unwrap();
    let run = finish(offline_command(&input, &output, &[])).await;
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("earlier csrd"));
}

pub(crate) struct TempDir(std::path::PathBuf);

impl TempDir {
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub(crate) fn tempdir() -> TempDir {
    let dir = std::env::temp_dir().join(format!("csrd-batch-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}
