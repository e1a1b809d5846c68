//! `csrd batch` against servers that misbehave: each run must end, non-zero, within its
//! budgets (shortened here by flags), with nothing read whole that the server did not bound.
//! The servers are a few lines of canned raw HTTP on a TcpListener; the bounds on time are
//! generous, there only to tell "ends" from "for ever".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;

use crate::batch_cli::{TempDir, tempdir};
use csrd_test_support::ACCOUNT_A;

const CSRD: &str = env!("CARGO_BIN_EXE_csrd");
/// Longer than any budget a test gives the client: a run still going then goes on for ever.
const FOREVER: Duration = Duration::from_secs(90);
const BATCH_ID: &str = "0b3c6f1e-9a51-4f0e-8f6a-1c2d3e4f5a6b";

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: Vec<u8>,
}

enum Reply {
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A chunked body that never ends.
    Endless { status: u16 },
}

impl Reply {
    fn json(status: u16, body: Value) -> Self {
        Self::raw(status, &body.to_string())
    }

    fn raw(status: u16, body: &str) -> Self {
        Reply::Full {
            status,
            headers: vec![("content-type", "application/json".into())],
            body: body.as_bytes().to_vec(),
        }
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        if let Reply::Full { headers, .. } = &mut self {
            headers.push((name, value.to_owned()));
        }
        self
    }
}

type Answer = dyn Fn(&Seen) -> Reply + Send + Sync;

struct HostileServer {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileServer {
    async fn start(answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let answer: Arc<Answer> = Arc::new(answer);
        let task = tokio::spawn({
            let seen = seen.clone();
            async move {
                while let Ok((stream, _)) = listener.accept().await {
                    let (seen, answer) = (seen.clone(), answer.clone());
                    tokio::spawn(async move {
                        let _ = serve(stream, &*answer, &seen).await;
                    });
                }
            }
        });
        Self { url, seen, task }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn posts(&self) -> Vec<Seen> {
        self.seen()
            .into_iter()
            .filter(|s| s.method == "POST")
            .collect()
    }
}

/// One request per connection: read it, record it, answer, close.
async fn serve(
    mut stream: TcpStream,
    answer: &Answer,
    seen: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let n = stream.read(&mut chunk).await?;
        if n == 0 || buf.len() > 64 * 1024 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut words = head.split_whitespace();
    let (method, path) = (
        words.next().unwrap_or_default().to_owned(),
        words.next().unwrap_or_default().to_owned(),
    );
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    let request = Seen { method, path, body };
    let reply = answer(&request);
    seen.lock().unwrap().push(request);
    match reply {
        Reply::Full {
            status,
            headers,
            body,
        } => {
            let mut out = format!(
                "HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n",
                body.len()
            );
            for (name, value) in headers {
                out.push_str(&format!("{name}: {value}\r\n"));
            }
            out.push_str("\r\n");
            stream.write_all(out.as_bytes()).await?;
            stream.write_all(&body).await?;
        }
        Reply::Endless { status } => {
            stream
                .write_all(
                    format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         transfer-encoding: chunked\r\n\r\n"
                    )
                    .as_bytes(),
                )
                .await?;
            let mut piece = format!("{:x}\r\n", 64 * 1024).into_bytes();
            piece.extend(std::iter::repeat_n(b' ', 64 * 1024));
            piece.extend_from_slice(b"\r\n");
            loop {
                stream.write_all(&piece).await?;
            }
        }
    }
    stream.shutdown().await
}

/// A batch as csrd describes it.
fn batch_state(total: usize, settled: usize, finished: bool) -> Value {
    json!({"success": true, "errors": [], "messages": [], "result": {
        "id": BATCH_ID, "status": if finished { "done" } else { "running" },
        "total": total, "done": settled, "failed": 0,
        "created_at": "2026-01-01T00:00:00Z",
        "finished_at": if finished { json!("2026-01-01T00:00:01Z") } else { Value::Null },
    }})
}

/// `n` valid JSONL lines, `sans` names each.
fn input(dir: &Path, n: usize, sans: usize) -> PathBuf {
    let mut text = String::new();
    for line in 1..=n {
        let cn = format!("line{line}.example.com");
        let names: Vec<String> = (0..sans).map(|k| format!("san{k}.{cn}")).collect();
        let body = json!({"common_name": cn, "sans": names, "country": "US", "state": "CA",
                          "locality": "SF", "organization": "Acme", "key_type": "p256v1"});
        text.push_str(&format!("{body}\n"));
    }
    let path = dir.join("input.jsonl");
    std::fs::write(&path, text).unwrap();
    path
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `csrd batch` against `url` with `env` (budgets are set through their variables, so an
/// older csrd without them runs, and fails on what it does); panics when it has not ended
/// within [`FOREVER`].
async fn run_client(url: &str, dir: &TempDir, input: &Path, env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(CSRD);
    cmd.args(["batch", "--url", url, "--account", ACCOUNT_A])
        .arg("--input")
        .arg(input)
        .arg("--output")
        .arg(dir.path().join("out.jsonl"))
        .envs(env.iter().copied())
        .env("CSRD_TOKEN", "test-token")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    let out = tokio::time::timeout(FOREVER, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("csrd batch still running after {FOREVER:?}: it runs for ever"))
        .unwrap();
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Starts a server that answers with `answer`, then runs `csrd batch` against it on `lines`
/// input lines of `sans` names each, with `env` (see [`run_client`]).
async fn run_against(
    answer: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    (lines, sans): (usize, usize),
    env: &[(&str, &str)],
) -> (HostileServer, TempDir, Run) {
    let server = HostileServer::start(answer).await;
    let dir = tempdir();
    let input = input(dir.path(), lines, sans);
    let run = run_client(&server.url, &dir, &input, env).await;
    (server, dir, run)
}

fn assert_failed(run: &Run, says: &str) {
    assert!(
        run.code.is_some_and(|c| c != 0),
        "exit {:?}\n{}\n{}",
        run.code,
        run.stdout,
        run.stderr
    );
    assert!(
        run.stderr.contains(says),
        "stderr should say {says:?}:\n{}",
        run.stderr
    );
}

#[tokio::test]
async fn an_endless_answer_is_cut_off_at_its_limit() {
    let (server, _dir, run) = run_against(
        |_| Reply::Endless { status: 202 },
        (3, 1),
        &[("CSRD_CLIENT_RETRY_BUDGET_SECS", "5")],
    )
    .await;
    assert_failed(&run, "larger than");
    assert_eq!(
        server.posts().len(),
        1,
        "an over-limit answer is not retried"
    );
}

#[tokio::test]
async fn a_malformed_202_stops_the_run() {
    // Neither the submission's answer nor a poll's says anything usable.
    let (server, _dir, run) = run_against(
        |s| match s.method.as_str() {
            "POST" => Reply::json(
                202,
                json!({"success": true, "result": {"status": "pending"}}),
            ),
            _ => Reply::json(200, json!({"success": true, "result": {}})),
        },
        (3, 1),
        &[],
    )
    .await;
    assert_failed(&run, "not what it should be");
    assert_eq!(server.seen().len(), 1, "no poll of a batch without an id");
}

#[tokio::test]
async fn an_unreadable_poll_answer_stops_the_run() {
    let (server, _dir, run) = run_against(
        |s| match s.method.as_str() {
            "POST" => Reply::json(202, batch_state(3, 0, false)),
            _ => Reply::raw(200, "<html>surprise</html>"),
        },
        (3, 1),
        &[],
    )
    .await;
    assert_failed(&run, "polling a batch");
    assert_eq!(server.seen().len(), 2, "one poll, then stop");
}

#[tokio::test]
async fn a_batch_that_never_finishes_stops_the_run_after_the_stall_budget() {
    let (_server, dir, run) = run_against(
        |s| match s.method.as_str() {
            "POST" => Reply::json(202, batch_state(3, 0, false)),
            _ => Reply::json(200, batch_state(3, 1, false)),
        },
        (3, 1),
        &[("CSRD_CLIENT_STALL_SECS", "2")],
    )
    .await;
    assert_failed(&run, "made no progress");
    assert!(
        dir.path().join("out.jsonl.partial").exists(),
        "the state file stays, for the next run"
    );
}

#[tokio::test]
async fn a_503_with_retry_after_zero_is_retried_at_most_once_a_second_within_the_budget() {
    let (server, _dir, run) = run_against(
        |_| {
            Reply::json(
                503,
                json!({"success": false, "errors": [{"code": 1500, "message": "busy"}]}),
            )
            .header("retry-after", "0")
        },
        (3, 1),
        &[("CSRD_CLIENT_RETRY_BUDGET_SECS", "3")],
    )
    .await;
    assert_failed(&run, "gave up after");
    let tries = server.seen().len();
    // At least a second apart within 3 s: 4 at most (the first, then after 1, 2 and 3 s).
    assert!((2..=4).contains(&tries), "{tries} requests");
}

#[tokio::test]
async fn a_400_pointing_outside_the_submission_fails_the_group_without_resubmitting() {
    let (server, dir, run) = run_against(
        |_| {
            Reply::json(
                400,
                json!({"success": false, "errors": [
                    {"code": 1412, "message": "bad SAN", "source": {"pointer": "/items/9999/sans/0"}}
                ]}),
            )
        },
        (3, 1),
        &[],
    )
    .await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.lines().last(), Some("0 created, 3 failed"));
    assert_eq!(server.posts().len(), 1, "no resubmission");
    let out = std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap();
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["errors"][0]["code"], 1412, "{v}");
    }
}

/// A csrd-like server that makes every item, refuses bodies over `max_body` with 413 and
/// items whose common name starts with `bad` with 400, listing at most two of them (and a
/// last error saying how many more were left out), as the API may.
fn working_server(max_body: usize) -> impl Fn(&Seen) -> Reply + Send + Sync + 'static {
    let batches: Mutex<HashMap<String, Vec<Value>>> = Mutex::new(HashMap::new());
    move |s| {
        if s.method == "POST" {
            if s.body.len() > max_body {
                return Reply::json(
                    413,
                    json!({"success": false, "errors": [
                    {"code": 1400, "message": "body too large", "source": {"pointer": ""}}]}),
                );
            }
            let items = serde_json::from_slice::<Value>(&s.body).unwrap()["items"]
                .as_array()
                .unwrap()
                .clone();
            let bad: Vec<usize> = (0..items.len())
                .filter(|&i| items[i]["common_name"].as_str().unwrap().starts_with("bad"))
                .collect();
            if !bad.is_empty() {
                let mut errors: Vec<Value> = bad.iter().take(2).map(|i| json!(
                    {"code": 1412, "message": "bad name", "source": {"pointer": format!("/items/{i}/common_name")}}
                )).collect();
                if bad.len() > 2 {
                    errors.push(json!({"code": 1400, "message": format!("{} more errors left out", bad.len() - 2), "source": {"pointer": ""}}));
                }
                return Reply::json(400, json!({"success": false, "errors": errors}));
            }
            let id = uuid::Uuid::new_v4().to_string();
            let n = items.len();
            batches.lock().unwrap().insert(id.clone(), items);
            let mut state = batch_state(n, n, true);
            state["result"]["id"] = json!(id);
            return Reply::json(202, state);
        }
        let rest = s.path.split("/batches/").nth(1).unwrap_or_default();
        let id = rest.split(['/', '?']).next().unwrap_or_default();
        let batches = batches.lock().unwrap();
        let Some(items) = batches.get(id) else {
            return Reply::json(404, json!({"success": false, "errors": []}));
        };
        if !rest.contains("/results") {
            let mut state = batch_state(items.len(), items.len(), true);
            state["result"]["id"] = json!(id);
            return Reply::json(200, state);
        }
        let query: HashMap<&str, usize> = s
            .path
            .split_once('?')
            .unwrap()
            .1
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k, v.parse().unwrap()))
            .collect();
        let (page, per_page) = (query["page"], query["per_page"]);
        let entries: Vec<Value> = items
            .iter()
            .enumerate()
            .skip((page - 1) * per_page)
            .take(per_page)
            .map(|(i, item)| {
                json!({"index": i, "id": format!("csr-{i}"), "status": "created",
                "result": {"id": format!("csr-{id}-{i}"), "common_name": item["common_name"]},
                "errors": []})
            })
            .collect();
        Reply::json(200, json!({"success": true, "result": entries}))
    }
}

fn created_lines(dir: &TempDir) -> Vec<Value> {
    std::fs::read_to_string(dir.path().join("out.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn submissions_are_cut_by_bytes_so_the_server_never_answers_413() {
    // The API's 32 MiB and the client's 8 MiB, scaled down: 32 KiB and 8 KiB, with lines of
    // 50 SANs (~1.4 KiB each) that the default 5,000 items a batch would send in one body.
    let (server, dir, run) = run_against(
        working_server(32 * 1024),
        (30, 50),
        &[("CSRD_CLIENT_MAX_BATCH_BYTES", "8192")],
    )
    .await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.lines().last(), Some("30 created, 0 failed"));
    let posts = server.posts();
    assert!(posts.len() >= 4, "{} submissions", posts.len());
    for post in &posts {
        assert!(
            post.body.len() <= 8192,
            "a body of {} bytes",
            post.body.len()
        );
    }
    let out = created_lines(&dir);
    assert_eq!(out.len(), 30);
    assert_eq!(out[29]["common_name"], "line30.example.com");
}

#[tokio::test]
async fn a_413_halves_the_group_until_it_fits() {
    let (_server, dir, run) = run_against(working_server(6 * 1024), (10, 50), &[]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.stdout.lines().last(), Some("10 created, 0 failed"));
    let out = created_lines(&dir);
    for (i, line) in out.iter().enumerate() {
        assert_eq!(line["line"], i + 1);
        assert_eq!(line["common_name"], format!("line{}.example.com", i + 1));
    }
}

#[tokio::test]
async fn when_the_api_lists_only_some_bad_items_the_rest_are_found_in_later_rounds() {
    let server = HostileServer::start(working_server(usize::MAX)).await;
    let dir = tempdir();
    let mut text = String::new();
    for line in 1..=12 {
        let cn = if line % 2 == 0 {
            format!("bad{line}.example.com")
        } else {
            format!("line{line}.example.com")
        };
        text.push_str(&format!("{}\n", json!({"common_name": cn, "sans": [cn]})));
    }
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, text).unwrap();
    let run = run_client(&server.url, &dir, &input, &[]).await;
    assert_eq!(
        run.stdout.lines().last(),
        Some("6 created, 6 failed"),
        "{}",
        run.stderr
    );
    let out = created_lines(&dir);
    for (i, line) in out.iter().enumerate() {
        if (i + 1) % 2 == 0 {
            assert_eq!(line["errors"][0]["code"], 1412, "{line}");
            assert_eq!(line["errors"][0]["source"]["pointer"], "/common_name");
        } else {
            assert!(line.get("errors").is_none(), "{line}");
        }
    }
    // Two bad items dropped a round: three 400s, then the batch.
    assert_eq!(server.posts().len(), 4);
}
