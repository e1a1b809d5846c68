//! Abuse: the connection layer's timeouts and cap, per-tenant rate and in-flight limits, fair
//! share of the queue, and the throttle on failed authentications. Small numbers here; the
//! large ones are in `scripts/abuse`.

use std::time::Duration;

use csrd::auth::Permission;
use csrd::startup::Role;
use reqwest::Method;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use csrd_test_support::*;

const CREATE_A: &str = "/client/v4/accounts/023e105f4ecef8ad9ca31a8372d0c353/custom_csrs";

/// Everything the server sends until it closes the connection (or `limit` passes).
async fn read_to_close(stream: &mut TcpStream, limit: Duration) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// The status and envelope of a raw response.
fn parse(raw: &str) -> (u16, serde_json::Value) {
    let status = raw
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {raw:?}"));
    let body = raw.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {raw:?}"));
    (status, json)
}

fn code(envelope: &serde_json::Value) -> u64 {
    envelope["errors"][0]["code"].as_u64().unwrap_or_default()
}

async fn connect(app: &TestApp) -> TcpStream {
    TcpStream::connect(app.addr()).await.unwrap()
}

async fn raw_exchange(app: &TestApp, request: &[u8]) -> (u16, serde_json::Value) {
    let mut stream = connect(app).await;
    stream.write_all(request).await.unwrap();
    parse(&read_to_close(&mut stream, Duration::from_secs(10)).await)
}

#[tokio::test]
async fn silent_connections_are_closed_after_the_idle_timeout() {
    let app = spawn_app_with(|s| s.http.http_idle_timeout_ms = 300).await;
    let mut stream = connect(&app).await;
    let got = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert_eq!(got, "", "an idle connection is closed without a response");

    // Also after a request (keep-alive): the next request never comes.
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let got = read_to_close(&mut stream, Duration::from_secs(10)).await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
}

#[tokio::test]
async fn a_request_head_sent_too_slowly_gets_408_in_the_envelope() {
    let app = spawn_app_with(|s| {
        s.http.http_header_timeout_ms = 300;
        s.http.http_idle_timeout_ms = 10_000;
    })
    .await;
    let mut stream = connect(&app).await;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let (status, envelope) = parse(&read_to_close(&mut stream, Duration::from_secs(10)).await);
    assert_eq!((status, code(&envelope)), (408, 1400), "{envelope}");
    assert_eq!(envelope["success"], false);
}

#[tokio::test]
async fn a_body_short_of_its_length_or_too_slow_gets_408() {
    let app = spawn_app_with(|s| s.http.http_body_timeout_ms = 400).await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let head = format!(
        "POST {CREATE_A} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    );
    // 50 bytes of 200, then nothing.
    let mut stream = connect(&app).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 50]).await.unwrap();
    let (status, envelope) = parse(&read_to_close(&mut stream, Duration::from_secs(10)).await);
    assert_eq!((status, code(&envelope)), (408, 1400), "{envelope}");

    // A byte every 100 ms: never finishes within the body timeout.
    let mut stream = connect(&app).await;
    stream.write_all(head.as_bytes()).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    let dribble = tokio::spawn(async move {
        for _ in 0..200 {
            if writer.write_all(b" ").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), reader.read_to_end(&mut out)).await;
    dribble.abort();
    let (status, envelope) = parse(&String::from_utf8_lossy(&out));
    assert_eq!((status, code(&envelope)), (408, 1400), "{envelope}");
}

#[tokio::test]
async fn transport_rejections_come_in_the_failure_envelope() {
    let app = spawn_app().await;
    let big_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(40_000)
    );
    let (status, envelope) = raw_exchange(&app, big_header.as_bytes()).await;
    assert_eq!((status, code(&envelope)), (431, 1400), "{envelope}");

    let huge_header = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1024 * 1024)
    );
    let (status, envelope) = raw_exchange(&app, huge_header.as_bytes()).await;
    assert_eq!((status, code(&envelope)), (431, 1400), "{envelope}");

    let many: String = (0..120).map(|i| format!("X-H{i}: 1\r\n")).collect();
    let (status, envelope) = raw_exchange(
        &app,
        format!("GET /healthz HTTP/1.1\r\n{many}\r\n").as_bytes(),
    )
    .await;
    assert_eq!((status, code(&envelope)), (431, 1400), "{envelope}");

    let long_uri = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(20_000));
    let (status, envelope) = raw_exchange(&app, long_uri.as_bytes()).await;
    assert_eq!((status, code(&envelope)), (414, 1400), "{envelope}");

    let (status, envelope) = raw_exchange(&app, b"\x01\x02 garbage\r\n\r\n").await;
    assert_eq!((status, code(&envelope)), (400, 1400), "{envelope}");

    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let too_large = format!(
        "POST {CREATE_A} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        2 * 1024 * 1024
    );
    let (status, envelope) = raw_exchange(&app, too_large.as_bytes()).await;
    assert_eq!((status, code(&envelope)), (413, 1400), "{envelope}");
}

#[tokio::test]
async fn health_stays_answerable_while_idle_and_slow_connections_fill_the_cap() {
    let app = spawn_app_with(|s| s.http.http_max_connections = 20).await;
    let mut held = Vec::new();
    for i in 0..60 {
        let mut stream = connect(&app).await;
        if i % 2 == 0 {
            // Slowloris: a head that never ends.
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nX-A: ")
                .await
                .unwrap();
        }
        held.push(stream);
    }
    for path in ["/healthz", "/readyz"] {
        let response = app.request(Method::GET, path).send().await;
        assert_eq!(response.status, 200, "{path} with the cap held");
    }
    let evicted = app.metric("csrd_http_connections_evicted_total").await;
    assert!(evicted >= 40.0, "{evicted} evicted");
}

#[tokio::test]
async fn at_the_cap_with_every_connection_busy_a_newcomer_gets_503() {
    let app = spawn_app_with(|s| {
        s.http.http_max_connections = 2;
        s.http.http_body_timeout_ms = 10_000;
    })
    .await;
    let token = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let head = format!(
        "POST {CREATE_A} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    let mut busy = Vec::new();
    for _ in 0..2 {
        let mut stream = connect(&app).await;
        stream.write_all(head.as_bytes()).await.unwrap();
        busy.push(stream);
    }
    // Both are now waiting for their bodies, inside a request.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut stream = connect(&app).await;
    let (status, envelope) = parse(&read_to_close(&mut stream, Duration::from_secs(10)).await);
    assert_eq!((status, code(&envelope)), (503, 1500), "{envelope}");
}

#[tokio::test]
async fn a_tenant_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let app = spawn_in_memory_with(|s| {
        s.tenants.tenant_rate = 0.5;
        s.tenants.tenant_burst = 3.0;
    })
    .await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let list = |owner: &str| format!("/client/v4/accounts/{owner}/custom_csrs");
    for _ in 0..3 {
        let ok = app
            .request(Method::GET, &list(ACCOUNT_A))
            .bearer(&a)
            .send()
            .await;
        assert_eq!(ok.status, 200);
    }
    let refused = app
        .request(Method::GET, &list(ACCOUNT_A))
        .bearer(&a)
        .send()
        .await;
    refused.assert_failure(429, 971);
    let retry_after: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "{retry_after}");
    let other = app
        .request(Method::GET, &list(ACCOUNT_B))
        .bearer(&b)
        .send()
        .await;
    assert_eq!(other.status, 200, "another tenant keeps its own budget");
}

/// The request rate counts requests: a batch costs one per MiB of body, never its items.
#[tokio::test]
async fn a_batch_costs_one_request_per_mebibyte_not_one_per_item() {
    let app = spawn_in_memory_with(|s| {
        s.tenants.tenant_rate = 0.01;
        s.tenants.tenant_burst = 4.0;
    })
    .await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let items: Vec<_> = (0..300).map(|_| p256_body()).collect();
    let submitted = app.submit_batch(ACCOUNT_A, &a, items).await;
    assert_eq!(
        submitted.status, 202,
        "300 items in a small body: one request"
    );
    for _ in 0..2 {
        let listed = app.request(Method::GET, CREATE_A).bearer(&a).send().await;
        assert_eq!(listed.status, 200, "the batch did not use up the rate");
    }
    // One item padded to 1.5 MiB: two requests' worth, one more than is left.
    let padded = format!(
        "{{\"items\": [{}]{}}}",
        p256_body(),
        " ".repeat(1536 * 1024)
    );
    let refused = app
        .request(Method::POST, &format!("{CREATE_A}/batches"))
        .bearer(&a)
        .header("content-type", "application/json")
        .body(padded)
        .send()
        .await;
    refused.assert_failure(429, 971);
}

#[tokio::test]
async fn creates_over_the_in_flight_cap_get_429() {
    // No worker: creates stay in flight until their wait runs out.
    let app = spawn_role(Role::Ingress, |s| {
        s.tenants.tenant_max_in_flight = 2;
        s.ingress.create_wait_secs = 3;
    })
    .await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let body = p256_body();
    let first = app.create("accounts", ACCOUNT_A, Auth::Bearer(&a), &body);
    let second = app.create("accounts", ACCOUNT_A, Auth::Bearer(&a), &body);
    let third = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.create("accounts", ACCOUNT_A, Auth::Bearer(&a), &body)
            .await
    };
    let other = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        app.create("accounts", ACCOUNT_B, Auth::Bearer(&b), &body)
            .await
    };
    let (first, second, third, other) = tokio::join!(first, second, third, other);
    assert_eq!((first.status, second.status), (202, 202));
    third.assert_failure(429, 971);
    assert_eq!(
        other.status, 202,
        "another tenant is not capped by A's creates"
    );
    let _worker = app.start_worker().await;
    eventually("the accepted creates are made", || async {
        (app.row_count().await == 3).then_some(())
    })
    .await;
}

#[tokio::test]
async fn failed_authentications_are_throttled_per_credential() {
    let app = spawn_in_memory_with(|s| s.tenants.auth_failures_per_min = 3).await;
    let bad = csrd::auth::ApiToken::generate();
    let other_bad = csrd::auth::ApiToken::generate();
    let good = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let list = |auth| app.send(Method::GET, CREATE_A, auth, None);
    for _ in 0..3 {
        list(Auth::Bearer(bad.reveal()))
            .await
            .assert_failure(403, 9109);
    }
    list(Auth::Bearer(bad.reveal()))
        .await
        .assert_failure(429, 971);
    list(Auth::Bearer(other_bad.reveal()))
        .await
        .assert_failure(403, 9109);
    assert_eq!(list(Auth::Bearer(&good)).await.status, 200);
}

/// Account A floods RSA creates; account B's one P-256 create must not wait behind the flood.
/// The ingress's window lets two RSA keys of A's into the queue, and a tenant holding nothing
/// in it (B) in at once; the worker's fair scheduler gives B the next keygen slot (not a timing
/// assertion: B must be answered while most of A's flood is still unanswered).
#[tokio::test]
async fn one_tenants_flood_does_not_starve_another() {
    let app = spawn_app_with(|s| {
        // Two RSA keys' worth of single creates in the queue from this ingress.
        s.tenants.ingress_window = 512;
        s.worker.workers = Some(1);
        s.ingress.create_wait_secs = 120;
    })
    .await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let done_a = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let flood: Vec<_> = (0..40)
        .map(|_| {
            let (url, a, done_a) = (app.url(CREATE_A), a.clone(), done_a.clone());
            tokio::spawn(async move {
                let status = reqwest::Client::new()
                    .post(url)
                    .bearer_auth(a)
                    .json(&example_body())
                    .send()
                    .await
                    .unwrap()
                    .status();
                done_a.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                status.as_u16()
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let answered = app
        .create("accounts", ACCOUNT_B, Auth::Bearer(&b), &p256_body())
        .await;
    let a_done_then = done_a.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(answered.status, 201, "{}", answered.body);
    assert!(
        a_done_then < 20,
        "B was answered only after {a_done_then} of A's 40 RSA creates"
    );
    for task in flood {
        assert_eq!(task.await.unwrap(), 201);
    }
}

/// A batch's chunks go to the bulk lane, and workers give single creates their keygen slots
/// first: another tenant's single create is answered while the batch is still being made.
#[tokio::test]
async fn a_batch_does_not_starve_single_creates() {
    let app = spawn_app_with(|s| {
        s.worker.workers = Some(1);
        // One RSA item per chunk, so that progress shows key by key.
        s.ingress.batch_chunk_items = 16;
    })
    .await;
    let a = app.token(&[ACCOUNT_A], &[], Permission::Write).await;
    let b = app.token(&[ACCOUNT_B], &[], Permission::Write).await;
    let items: Vec<_> = (0..40).map(|_| example_body()).collect();
    let submitted = app
        .request(Method::POST, &format!("{CREATE_A}/batches"))
        .bearer(&a)
        .json(&serde_json::json!({ "items": items }))
        .send()
        .await;
    assert_eq!(submitted.status, 202);
    let batch = submitted.json()["result"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let batch_path = format!("{CREATE_A}/batches/{batch}");
    eventually("the batch to start", || async {
        let got = app
            .request(Method::GET, &batch_path)
            .bearer(&a)
            .send()
            .await;
        (got.json()["result"]["done"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let answered = app
        .create("accounts", ACCOUNT_B, Auth::Bearer(&b), &p256_body())
        .await;
    assert_eq!(answered.status, 201, "{}", answered.body);
    let progress = app
        .request(Method::GET, &batch_path)
        .bearer(&a)
        .send()
        .await;
    let done = progress.json()["result"]["done"].as_u64().unwrap();
    assert!(
        done < 20,
        "B was answered only after {done} of the batch's 40 RSA keys"
    );
    eventually_within("the batch to finish", Duration::from_secs(120), || async {
        let got = app
            .request(Method::GET, &batch_path)
            .bearer(&a)
            .send()
            .await;
        (got.json()["result"]["status"] == "done").then_some(())
    })
    .await;
}
